//! A field of a fixed-size kernel structure: offset and width, optionally a bit range. Layouts
//! come from profiles or symbol files; this is how either is read.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::bytes::{parse_int, Le};
use crate::error::{Error, Result};

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
    /// A field at `offset` of `width` bytes, bits `shift..shift+bits` of it (at least one bit,
    /// inside the `width` bytes).
    pub fn at(offset: usize, width: u8, shift: u8, bits: u8) -> Option<Self> {
        let inside = bits > 0 && u16::from(shift) + u16::from(bits) <= u16::from(width) * 8;
        (matches!(width, 1 | 2 | 4 | 8) && inside).then_some(Self {
            offset,
            width,
            shift,
            bits,
        })
    }

    /// (offset, width, shift, bits).
    pub fn parts(&self) -> (usize, u8, u8, u8) {
        (self.offset, self.width, self.shift, self.bits)
    }

    pub fn new(f: &Field) -> Option<Self> {
        let offset = parse_int(&f.offset)? as usize;
        let width = f.width;
        Self::at(
            offset,
            width,
            f.shift.unwrap_or(0),
            f.bits.unwrap_or(width.saturating_mul(8)),
        )
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
        (raw >> self.shift) & self.mask()
    }

    pub fn end(&self) -> usize {
        self.offset.saturating_add(self.width as usize)
    }

    pub fn offset(&self) -> usize {
        self.offset
    }

    pub fn width(&self) -> u8 {
        self.width
    }

    /// The bit range within the `width` bytes: its first bit and its length.
    pub fn shift(&self) -> u8 {
        self.shift
    }

    pub fn bits(&self) -> u8 {
        self.bits
    }

    /// The mask of a value of this field's bit length.
    pub fn mask(&self) -> u64 {
        if self.bits >= 64 {
            u64::MAX
        } else {
            (1u64 << self.bits) - 1
        }
    }

    /// The same field inside a structure embedded `by` bytes into another.
    pub fn moved(self, by: usize) -> Self {
        Self {
            offset: self.offset.saturating_add(by),
            ..self
        }
    }
}

/// A fixed-size entry layout from a profile section, `{size, Field: {offset, width}}`: its
/// size (the stride in arrays) and named fields.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The profile section ("pool.tracker"), for error messages.
    pub what: String,
    pub size: usize,
    fields: BTreeMap<String, FieldAt>,
}

impl Entry {
    pub fn parse(what: &str, raw: &BTreeMap<String, serde_json::Value>) -> Result<Self> {
        let bad = |m: String| Error::format(0, format!("profile {what}: {m}"));
        let size = raw
            .get("size")
            .and_then(|v| v.as_str())
            .and_then(parse_int)
            .ok_or_else(|| bad("size missing".into()))? as usize;
        let mut fields = BTreeMap::new();
        for (name, v) in raw {
            // "size" is the entry's; other strings are notes (a hash rule, a source, a doubt)
            if name == "size" || v.is_string() {
                continue;
            }
            let f: Field =
                serde_json::from_value(v.clone()).map_err(|e| bad(format!("{name}: {e}")))?;
            let at = FieldAt::new(&f).ok_or_else(|| bad(format!("{name}: bad offset/width")))?;
            if at.end() > size {
                return Err(bad(format!("{name} ends past the entry size 0x{size:x}")));
            }
            fields.insert(name.clone(), at);
        }
        Ok(Self {
            what: what.to_string(),
            size,
            fields,
        })
    }

    pub fn field(&self, name: &str) -> Result<FieldAt> {
        self.get(name)
            .ok_or_else(|| Error::format(0, format!("profile lacks field {name} of {}", self.what)))
    }

    pub fn get(&self, name: &str) -> Option<FieldAt> {
        self.fields.get(name).copied()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.fields.keys().map(String::as_str)
    }

    /// Take a symbol table's layout of the same structure: its size and these fields.
    pub fn replace(&mut self, size: usize, fields: impl IntoIterator<Item = (String, FieldAt)>) {
        self.size = size;
        self.fields.extend(fields);
    }
}
