//! Volatility 3 ISF symbol tables (the JSON that volatility3 generates from a kernel's PDB):
//! exact global addresses and structure layouts, which override the profile where present.
//!
//! ISF shape: `symbols: {name: {address}}` with addresses relative to the kernel image base
//! (volatility3 adds the kernel's load address), `user_types: {name: {size, fields: {name:
//! {offset, type}}}}`, `base_types: {name: {size}}`; a field type is `{kind: base|pointer|
//! bitfield|struct|array|enum, name, ...}`, a bitfield `{bit_position, bit_length, type}`.

use std::collections::HashMap;

use serde_json::Value;

use super::fields::FieldAt;
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct StructLayout {
    pub size: usize,
    /// Scalar fields (base, pointer, enum, bitfield).
    pub fields: HashMap<String, FieldAt>,
    /// Every field by offset, with what nested paths and arrays need.
    pub members: HashMap<String, Member>,
}

/// A field of any kind: where it is, and for a struct/union the type's name, for an array its
/// element count and the element (when scalar).
#[derive(Debug, Clone)]
pub struct Member {
    pub offset: usize,
    pub type_name: Option<String>,
    pub count: Option<u64>,
    pub element: Option<FieldAt>,
}

/// Nested structures followed by [`Symbols::resolve`]; a real ISF is far shallower.
const MAX_DEPTH: usize = 8;

#[derive(Debug, Clone, Default)]
pub struct Symbols {
    /// Where the table came from (file name).
    pub origin: String,
    /// What `sources` says of a figure read with it: `symbols FILE` (ISF) or
    /// `pdb NAME GUIDAGE` (a PDB).
    pub source: String,
    /// Symbol → address relative to the kernel base.
    pub globals: HashMap<String, u64>,
    pub types: HashMap<String, StructLayout>,
}

fn bad(what: impl Into<String>) -> Error {
    Error::format(0, format!("ISF symbol table: {}", what.into()))
}

impl Symbols {
    pub fn from_isf(text: &str, origin: &str) -> Result<Self> {
        let doc: Value = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        let obj = |k: &str| doc.get(k).and_then(Value::as_object);
        let syms = obj("symbols").ok_or_else(|| bad("no \"symbols\" object"))?;
        let base_sizes: HashMap<&str, u64> = obj("base_types")
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.as_str(), v.get("size")?.as_u64()?)))
                    .collect()
            })
            .unwrap_or_default();
        let enum_sizes: HashMap<&str, u64> = obj("enums")
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.as_str(), v.get("size")?.as_u64()?)))
                    .collect()
            })
            .unwrap_or_default();
        let mut out = Symbols {
            origin: origin.to_string(),
            source: format!("symbols {origin}"),
            ..Default::default()
        };
        for (name, v) in syms {
            if let Some(a) = v.get("address").and_then(Value::as_u64) {
                out.globals.insert(name.clone(), a);
            }
        }
        let width_of = |t: &Value| -> Option<u8> {
            let kind = t.get("kind")?.as_str()?;
            let size = match kind {
                "pointer" => 8,
                "base" => *base_sizes.get(t.get("name")?.as_str()?)?,
                "enum" => *enum_sizes.get(t.get("name")?.as_str()?)?,
                _ => return None,
            };
            u8::try_from(size).ok()
        };
        if let Some(types) = obj("user_types") {
            for (name, t) in types {
                let size = t.get("size").and_then(Value::as_u64).unwrap_or(0) as usize;
                let mut fields = HashMap::new();
                let mut members = HashMap::new();
                for (fname, f) in t
                    .get("fields")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                {
                    let Some(offset) = f.get("offset").and_then(Value::as_u64) else {
                        continue;
                    };
                    let Some(ty) = f.get("type") else { continue };
                    let kind = ty.get("kind").and_then(Value::as_str).unwrap_or("");
                    let is_array = kind == "array";
                    members.insert(
                        fname.clone(),
                        Member {
                            offset: offset as usize,
                            type_name: matches!(kind, "struct" | "union")
                                .then(|| ty.get("name").and_then(Value::as_str))
                                .flatten()
                                .map(str::to_string),
                            count: is_array
                                .then(|| ty.get("count").and_then(Value::as_u64))
                                .flatten(),
                            element: is_array
                                .then(|| ty.get("subtype").and_then(width_of))
                                .flatten()
                                .and_then(|w| FieldAt::at(offset as usize, w, 0, w * 8)),
                        },
                    );
                    let at = if ty.get("kind").and_then(Value::as_str) == Some("bitfield") {
                        let bits = |k: &str| {
                            let v = ty.get(k).and_then(Value::as_u64)?;
                            u8::try_from(v).ok()
                        };
                        let (pos, len) = (bits("bit_position"), bits("bit_length"));
                        ty.get("type")
                            .and_then(width_of)
                            .zip(pos.zip(len))
                            .and_then(|(w, (pos, len))| FieldAt::at(offset as usize, w, pos, len))
                    } else {
                        width_of(ty).and_then(|w| FieldAt::at(offset as usize, w, 0, w * 8))
                    };
                    if let Some(at) = at {
                        fields.insert(fname.clone(), at);
                    }
                }
                out.types.insert(
                    name.clone(),
                    StructLayout {
                        size,
                        fields,
                        members,
                    },
                );
            }
        }
        Ok(out)
    }

    /// VA of a global given the kernel base (absolute addresses are taken as they are).
    pub fn address(&self, name: &str, kernel_base: u64) -> Option<u64> {
        let a = *self.globals.get(name)?;
        Some(if a >> 47 == 0x1FFFF {
            a
        } else {
            kernel_base.wrapping_add(a)
        })
    }

    /// A field of `ty` by dotted path ("BaseName.Length", "TreeNode.Base.p"): embedded
    /// structures are followed by name; an array names its first element.
    pub fn resolve(&self, ty: &str, path: &str) -> Option<FieldAt> {
        let (base, last, t) = self.walk(ty, path)?;
        if let Some(f) = t.fields.get(last) {
            return Some(f.moved(base));
        }
        t.members.get(last)?.element.map(|e| e.moved(base))
    }

    /// Offset of a (possibly nested) member of any kind, e.g. an SLIST_HEADER.
    pub fn member_offset(&self, ty: &str, path: &str) -> Option<usize> {
        let (base, last, t) = self.walk(ty, path)?;
        Some(base + t.members.get(last)?.offset)
    }

    /// Element count of an array member.
    pub fn array_count(&self, ty: &str, path: &str) -> Option<u64> {
        let (_, last, t) = self.walk(ty, path)?;
        t.members.get(last)?.count
    }

    /// Follow all but the last component: (offset of the innermost structure, last name, it).
    fn walk<'s, 'p>(
        &'s self,
        ty: &str,
        path: &'p str,
    ) -> Option<(usize, &'p str, &'s StructLayout)> {
        let mut t = self.types.get(ty)?;
        let mut base = 0usize;
        let mut parts = path.split('.').peekable();
        for _ in 0..MAX_DEPTH {
            let part = parts.next()?;
            if parts.peek().is_none() {
                return Some((base, part, t));
            }
            let m = t.members.get(part)?;
            base = base.checked_add(m.offset)?;
            t = self.types.get(m.type_name.as_deref()?)?;
        }
        None
    }
}
