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
    pub fields: HashMap<String, FieldAt>,
}

#[derive(Debug, Clone, Default)]
pub struct Symbols {
    /// Where the table came from (file name), for `sources`.
    pub origin: String,
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
                    let at = if ty.get("kind").and_then(Value::as_str) == Some("bitfield") {
                        let pos = ty.get("bit_position").and_then(Value::as_u64).unwrap_or(0) as u8;
                        let len = ty.get("bit_length").and_then(Value::as_u64).unwrap_or(0) as u8;
                        ty.get("type")
                            .and_then(width_of)
                            .and_then(|w| FieldAt::at(offset as usize, w, pos, len))
                    } else {
                        width_of(ty).and_then(|w| FieldAt::at(offset as usize, w, 0, w * 8))
                    };
                    if let Some(at) = at {
                        fields.insert(fname.clone(), at);
                    }
                }
                out.types
                    .insert(name.clone(), StructLayout { size, fields });
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
}
