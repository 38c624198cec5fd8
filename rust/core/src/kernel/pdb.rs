//! The kernel's PDB read directly (MSF 7.0, through the `pdb2` crate): its identity (GUID and
//! age, what a symbol store files it under), its public and global data symbols as RVAs (section
//! offsets mapped through the section headers the DBI stream names), and every structure and
//! union of its type stream (TPI) as the same [`Symbols`] value an ISF gives.
//!
//! Forward references are resolved to their definitions by (unique) name; a member whose type is
//! a modifier (`volatile`, `const`) takes the modified type; an enum has its underlying type's
//! width; unnamed types (`<unnamed-tag>`) are named `__unnamed_<type index>` as volatility3's
//! converter names them. A hostile file gives an `Error` (kind `Symbols`), never a panic: the
//! crate's errors are mapped, and a panic inside it is caught and reported as one.

use std::collections::HashMap;
use std::io::Cursor;

use pdb2::FallibleIterator;

use super::fields::FieldAt;
use super::symbols::{Member, StructLayout, Symbols};
use crate::error::{Error, Result};

/// What identifies a PDB: the name it was built as, its GUID and its age.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PdbId {
    pub name: String,
    pub data1: u32,
    pub data2: u16,
    pub data3: u16,
    pub data4: [u8; 8],
    pub age: u32,
}

impl PdbId {
    /// From the 16 GUID bytes as an RSDS record or the PDB info stream hold them.
    pub fn from_raw(name: &str, guid: &[u8; 16], age: u32) -> Self {
        let mut data4 = [0u8; 8];
        data4.copy_from_slice(&guid[8..]);
        PdbId {
            name: name.to_string(),
            data1: u32::from_le_bytes([guid[0], guid[1], guid[2], guid[3]]),
            data2: u16::from_le_bytes([guid[4], guid[5]]),
            data3: u16::from_le_bytes([guid[6], guid[7]]),
            data4,
            age,
        }
    }

    /// `{8-4-4-4-12}` form, uppercase, as WinDbg's `lm` and `llvm-pdbutil` print it.
    pub fn guid(&self) -> String {
        let d4: String = self.data4.iter().map(|b| format!("{b:02X}")).collect();
        format!(
            "{:08X}-{:04X}-{:04X}-{}-{}",
            self.data1,
            self.data2,
            self.data3,
            &d4[..4],
            &d4[4..]
        )
    }

    /// The symbol store's directory name: the GUID as 32 hex digits (Data1, Data2, Data3 as
    /// numbers, then Data4's bytes) and the age in hex, as symstore and WinDbg file it.
    pub fn store_id(&self) -> String {
        let d4: String = self.data4.iter().map(|b| format!("{b:02X}")).collect();
        format!(
            "{:08X}{:04X}{:04X}{}{:X}",
            self.data1, self.data2, self.data3, d4, self.age
        )
    }

    /// Same GUID and age (names may differ in case or path; the store key is GUID and age).
    pub fn same_build(&self, other: &PdbId) -> bool {
        (self.data1, self.data2, self.data3, self.data4, self.age)
            == (
                other.data1,
                other.data2,
                other.data3,
                other.data4,
                other.age,
            )
    }
}

/// A PDB read whole: its identity and its symbols.
#[derive(Debug, Clone)]
pub struct Pdb {
    pub id: PdbId,
    pub symbols: Symbols,
    /// Counts for reports and tests: (publics, global data symbols, structures and unions).
    pub counts: (usize, usize, usize),
}

fn bad(file: &str, what: impl std::fmt::Display) -> Error {
    Error::symbols(format!("PDB {file}: {what}"))
}

/// Nested modifiers/arrays followed when sizing a member's type; real PDBs need 2-3.
const MAX_TYPE_DEPTH: usize = 16;
/// Field lists chained through continuations; a cycle in a hostile file stops here.
const MAX_FIELD_LISTS: usize = 4096;

/// Read a PDB file's bytes. `file` names it in messages and `sources` (`pdb FILE GUIDAGE`).
pub fn read(data: &[u8], file: &str) -> Result<Pdb> {
    let owned = data.to_vec();
    let name = file.to_string();
    match std::panic::catch_unwind(move || read_inner(owned, &name)) {
        Ok(r) => r,
        Err(_) => Err(bad(
            file,
            "malformed (the PDB reader gave up on its structure)",
        )),
    }
}

/// Only the identity: GUID and age (PDB info stream; the DBI stream's age when it has one).
pub fn identify(data: &[u8], file: &str) -> Result<PdbId> {
    let owned = data.to_vec();
    let name = file.to_string();
    match std::panic::catch_unwind(move || {
        let mut pdb = pdb2::PDB::open(Cursor::new(owned))
            .map_err(|e| bad(&name, format!("not a PDB: {e}")))?;
        identity(&mut pdb, &name)
    }) {
        Ok(r) => r,
        Err(_) => Err(bad(
            file,
            "malformed (the PDB reader gave up on its structure)",
        )),
    }
}

fn identity(pdb: &mut pdb2::PDB<'_, Cursor<Vec<u8>>>, file: &str) -> Result<PdbId> {
    let info = pdb
        .pdb_information()
        .map_err(|e| bad(file, format!("PDB info stream: {e}")))?;
    let dbi_age = pdb.debug_information().ok().and_then(|d| d.age());
    let (d1, d2, d3, d4) = info.guid.as_fields();
    let stem = file.rsplit(['/', '\\']).next().unwrap_or(file);
    Ok(PdbId {
        name: stem.to_string(),
        data1: d1,
        data2: d2,
        data3: d3,
        data4: *d4,
        age: dbi_age.unwrap_or(info.age),
    })
}

fn read_inner(data: Vec<u8>, file: &str) -> Result<Pdb> {
    let mut pdb =
        pdb2::PDB::open(Cursor::new(data)).map_err(|e| bad(file, format!("not a PDB: {e}")))?;
    let id = identity(&mut pdb, file)?;
    let mut symbols = Symbols {
        origin: file.to_string(),
        source: format!("pdb {} {}", id.name, id.store_id()),
        ..Default::default()
    };
    let (publics, data) = read_globals(&mut pdb, file, &mut symbols.globals)?;
    symbols.types = read_types(&mut pdb, file)?;
    let counts = (publics, data, symbols.types.len());
    Ok(Pdb {
        id,
        symbols,
        counts,
    })
}

/// S_PUB32 and S_GDATA32/S_LDATA32 of the global symbol stream, as RVAs. A data symbol
/// overrides a public of the same name (both give the same address in a linker's PDB).
fn read_globals(
    pdb: &mut pdb2::PDB<'_, Cursor<Vec<u8>>>,
    file: &str,
    out: &mut HashMap<String, u64>,
) -> Result<(usize, usize)> {
    let map = pdb
        .address_map()
        .map_err(|e| bad(file, format!("section headers: {e}")))?;
    let table = pdb
        .global_symbols()
        .map_err(|e| bad(file, format!("symbol records: {e}")))?;
    let mut it = table.iter();
    let (mut publics, mut data) = (0usize, 0usize);
    let mut from_data = std::collections::HashSet::new();
    while let Some(sym) = it
        .next()
        .map_err(|e| bad(file, format!("symbol records: {e}")))?
    {
        match sym.parse() {
            Ok(pdb2::SymbolData::Public(p)) => {
                if let Some(rva) = p.offset.to_rva(&map) {
                    publics += 1;
                    let name = p.name.to_string().into_owned();
                    if !from_data.contains(&name) {
                        out.insert(name, u64::from(rva.0));
                    }
                }
            }
            Ok(pdb2::SymbolData::Data(d)) => {
                if let Some(rva) = d.offset.to_rva(&map) {
                    data += 1;
                    let name = d.name.to_string().into_owned();
                    out.insert(name.clone(), u64::from(rva.0));
                    from_data.insert(name);
                }
            }
            // Other kinds (procedures, constants, UDTs...) and kinds the crate does not know.
            _ => {}
        }
    }
    Ok((publics, data))
}

/// What a member's type is, for a layout.
enum Shape {
    /// A scalar of this width (base, pointer, enum).
    Scalar(u8),
    Bitfield {
        width: u8,
        position: u8,
        length: u8,
    },
    /// A structure or union (by its definition's name) and its size.
    Named(String, u64),
    Array {
        count: u64,
        element: Option<u8>,
        bytes: u64,
    },
    Unknown,
}

/// Size of a primitive (type index < 0x1000): pointer modes are 8 bytes on x64 (4 for the
/// 32-bit modes), otherwise the CodeView basic type's size.
fn primitive(index: u32) -> Shape {
    match (index >> 8) & 0xF {
        0 => {}
        4 | 5 => return Shape::Scalar(4),
        6 => return Shape::Scalar(8),
        _ => return Shape::Unknown,
    }
    let w = match index & 0xFF {
        0x10 | 0x20 | 0x68 | 0x69 | 0x70 | 0x30 | 0x7c => 1,
        0x11 | 0x21 | 0x72 | 0x73 | 0x71 | 0x7a | 0x31 => 2,
        0x12 | 0x22 | 0x74 | 0x75 | 0x7b | 0x32 | 0x40 | 0x08 => 4,
        0x13 | 0x23 | 0x76 | 0x77 | 0x33 | 0x41 => 8,
        _ => return Shape::Unknown,
    };
    Shape::Scalar(w)
}

struct Types<'a, 't> {
    finder: &'a pdb2::TypeFinder<'t>,
    /// Forward reference's key (unique name, else name) → the definition's index.
    defs: &'a HashMap<String, pdb2::TypeIndex>,
    /// Definition index → the name it is filed under in `Symbols::types`.
    names: &'a HashMap<pdb2::TypeIndex, String>,
}

fn is_unnamed(name: &str) -> bool {
    name.is_empty()
        || name == "__unnamed"
        || name.starts_with("<unnamed-")
        || name.starts_with("<anonymous-")
}

impl Types<'_, '_> {
    fn shape(&self, index: pdb2::TypeIndex, depth: usize) -> Shape {
        if index.0 < 0x1000 {
            return primitive(index.0);
        }
        if depth > MAX_TYPE_DEPTH {
            return Shape::Unknown;
        }
        let Ok(item) = self.finder.find(index) else {
            return Shape::Unknown;
        };
        let Ok(data) = item.parse() else {
            return Shape::Unknown;
        };
        match data {
            pdb2::TypeData::Pointer(p) => Shape::Scalar(p.attributes.size().clamp(1, 8)),
            pdb2::TypeData::Modifier(m) => self.shape(m.underlying_type, depth + 1),
            pdb2::TypeData::Enumeration(e) => match self.shape(e.underlying_type, depth + 1) {
                s @ Shape::Scalar(_) => s,
                _ => Shape::Scalar(4),
            },
            pdb2::TypeData::Bitfield(b) => match self.shape(b.underlying_type, depth + 1) {
                Shape::Scalar(width) => Shape::Bitfield {
                    width,
                    position: b.position,
                    length: b.length,
                },
                _ => Shape::Unknown,
            },
            pdb2::TypeData::Class(pdb2::ClassType {
                properties,
                ref name,
                ref unique_name,
                size,
                ..
            })
            | pdb2::TypeData::Union(pdb2::UnionType {
                properties,
                ref name,
                ref unique_name,
                size,
                ..
            }) => {
                let def = if properties.forward_reference() {
                    let key = unique_name.as_ref().unwrap_or(name).to_string();
                    match self.defs.get(key.as_ref()) {
                        Some(d) => *d,
                        None => return Shape::Unknown,
                    }
                } else {
                    index
                };
                let Some(n) = self.names.get(&def) else {
                    return Shape::Unknown;
                };
                let size = if def == index {
                    size
                } else {
                    self.size_of(def).unwrap_or(0)
                };
                Shape::Named(n.clone(), size)
            }
            pdb2::TypeData::Array(a) => {
                let bytes = u64::from(a.dimensions.first().copied().unwrap_or(0));
                let (elem_bytes, element) = match self.shape(a.element_type, depth + 1) {
                    Shape::Scalar(w) => (u64::from(w), Some(w)),
                    Shape::Named(_, s) => (s, None),
                    Shape::Array { bytes, .. } => (bytes, None),
                    _ => (0, None),
                };
                let count = bytes.checked_div(elem_bytes).unwrap_or(0);
                Shape::Array {
                    count,
                    element,
                    bytes,
                }
            }
            _ => Shape::Unknown,
        }
    }

    fn size_of(&self, def: pdb2::TypeIndex) -> Option<u64> {
        match self.finder.find(def).ok()?.parse().ok()? {
            pdb2::TypeData::Class(c) => Some(c.size),
            pdb2::TypeData::Union(u) => Some(u.size),
            _ => None,
        }
    }

    /// The layout of a definition: every LF_MEMBER of its field list (and continuations).
    fn layout(&self, fields: Option<pdb2::TypeIndex>, size: u64) -> StructLayout {
        let mut out = StructLayout {
            size: usize::try_from(size).unwrap_or(0),
            fields: HashMap::new(),
            members: HashMap::new(),
        };
        let mut next = fields;
        let mut hops = 0;
        while let Some(list) = next.take() {
            hops += 1;
            if hops > MAX_FIELD_LISTS {
                break;
            }
            let Ok(pdb2::TypeData::FieldList(fl)) = self.finder.find(list).and_then(|t| t.parse())
            else {
                break;
            };
            for f in fl.fields {
                let pdb2::TypeData::Member(m) = f else {
                    continue;
                };
                let Ok(offset) = usize::try_from(m.offset) else {
                    continue;
                };
                let name = m.name.to_string().into_owned();
                let shape = self.shape(m.field_type, 0);
                let mut member = Member {
                    offset,
                    type_name: None,
                    count: None,
                    element: None,
                };
                match shape {
                    Shape::Scalar(w) => {
                        if let Some(at) = FieldAt::at(offset, w, 0, w.saturating_mul(8)) {
                            out.fields.insert(name.clone(), at);
                        }
                    }
                    Shape::Bitfield {
                        width,
                        position,
                        length,
                    } => {
                        if let Some(at) = FieldAt::at(offset, width, position, length) {
                            out.fields.insert(name.clone(), at);
                        }
                    }
                    Shape::Named(n, _) => member.type_name = Some(n),
                    Shape::Array { count, element, .. } => {
                        member.count = Some(count);
                        member.element =
                            element.and_then(|w| FieldAt::at(offset, w, 0, w.saturating_mul(8)));
                    }
                    Shape::Unknown => {}
                }
                out.members.insert(name, member);
            }
            next = fl.continuation;
        }
        out
    }
}

fn read_types(
    pdb: &mut pdb2::PDB<'_, Cursor<Vec<u8>>>,
    file: &str,
) -> Result<HashMap<String, StructLayout>> {
    let tpi = pdb
        .type_information()
        .map_err(|e| bad(file, format!("type stream (TPI): {e}")))?;
    let mut finder = tpi.finder();
    let mut iter = tpi.iter();
    // Definitions: (index, field list, size); the first definition of a name wins.
    let mut defs: HashMap<String, pdb2::TypeIndex> = HashMap::new();
    let mut names: HashMap<pdb2::TypeIndex, String> = HashMap::new();
    let mut bodies: Vec<(pdb2::TypeIndex, Option<pdb2::TypeIndex>, u64)> = Vec::new();
    while let Some(item) = iter
        .next()
        .map_err(|e| bad(file, format!("type stream (TPI): {e}")))?
    {
        finder.update(&iter);
        let index = item.index();
        let (props, name, unique, fields, size) = match item.parse() {
            Ok(pdb2::TypeData::Class(c)) => (c.properties, c.name, c.unique_name, c.fields, c.size),
            Ok(pdb2::TypeData::Union(u)) => {
                (u.properties, u.name, u.unique_name, Some(u.fields), u.size)
            }
            _ => continue,
        };
        if props.forward_reference() {
            continue;
        }
        let name = name.to_string().into_owned();
        let key = unique
            .map(|u| u.to_string().into_owned())
            .unwrap_or_else(|| name.clone());
        if defs.contains_key(&key) {
            continue;
        }
        defs.insert(key, index);
        let filed = if is_unnamed(&name) {
            format!("__unnamed_{:x}", index.0)
        } else {
            name
        };
        names.insert(index, filed);
        bodies.push((index, fields, size));
    }
    let types = Types {
        finder: &finder,
        defs: &defs,
        names: &names,
    };
    let mut out = HashMap::new();
    for (index, fields, size) in bodies {
        let name = names[&index].clone();
        if out.contains_key(&name) {
            continue;
        }
        out.insert(name, types.layout(fields, size));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_id_is_windbgs() {
        let guid = [
            0x78, 0x56, 0x34, 0x12, 0xBC, 0x9A, 0xF0, 0xDE, 1, 2, 3, 4, 5, 6, 7, 0xAB,
        ];
        let id = PdbId::from_raw("ntkrnlmp.pdb", &guid, 0x1A);
        assert_eq!(id.guid(), "12345678-9ABC-DEF0-0102-0304050607AB");
        assert_eq!(
            id.store_id(),
            "123456789ABCDEF0010203040506 07AB1A".replace(' ', "")
        );
    }

    #[test]
    fn hostile_bytes_are_errors_not_panics() {
        let mut msf = b"Microsoft C/C++ MSF 7.00\r\n\x1aDS\0\0\0".to_vec();
        for fill in [0u8, 0xFF, 0x41] {
            for len in [0usize, 4, 32, 56, 4096, 3 * 4096] {
                let mut data = msf.clone();
                data.resize(len.max(data.len()), fill);
                data.truncate(len);
                let e = read(&data, "x.pdb").unwrap_err();
                assert_eq!(e.kind, crate::error::ErrorKind::Symbols, "{e}");
                assert!(identify(&data, "x.pdb").is_err());
            }
        }
        // A superblock claiming absurd geometry.
        msf.extend_from_slice(&4096u32.to_le_bytes());
        msf.extend_from_slice(&1u32.to_le_bytes());
        msf.extend_from_slice(&u32::MAX.to_le_bytes());
        msf.extend_from_slice(&u32::MAX.to_le_bytes());
        msf.resize(8192, 0xEE);
        assert!(read(&msf, "x.pdb").is_err());
    }
}
