//! The `verifier` section of a profile: every Driver Verifier structure as `{size, Field:
//! {offset, width}}` plus the constants (signatures, tracker page geometry, stack depths). A
//! symbol table's layouts replace the profile's where it has the types.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::bytes::parse_int;
use crate::error::{Error, Result};
use crate::kernel::fields::{Entry, FieldAt};
use crate::kernel::{Profile, Symbols};
use crate::pool::globals::Sources;
use crate::verifier::{TAG_IRP_TRACES, TAG_POOL_TRACES};

/// Profile section → ISF type name.
const SYMBOL_TYPES: [(&str, &str); 12] = [
    ("mi_verifier_driver_entry", "_MI_VERIFIER_DRIVER_ENTRY"),
    ("mm_driver_verifier_data", "_MM_DRIVER_VERIFIER_DATA"),
    ("suspect_driver_entry", "_VF_SUSPECT_DRIVER_ENTRY"),
    ("target_driver", "_VF_TARGET_DRIVER"),
    ("verified_driver_data", "_VF_TARGET_VERIFIED_DRIVER_DATA"),
    ("pool_trace", "_VF_POOL_TRACE"),
    ("irp_trace", "_IOV_IRP_TRACE"),
    ("avl_tree", "_VF_AVL_TREE"),
    ("avl_table", "_VF_AVL_TABLE"),
    ("balanced_links", "_RTL_BALANCED_LINKS"),
    ("pool_page_header", "_VI_POOL_PAGE_HEADER"),
    ("pool_entry", "_VI_POOL_ENTRY_INUSE"),
];

/// Where a PDB nests a field the profile names flat (tried after the profile's own name).
const ALIASES: [(&str, &[&str]); 7] = [
    ("Flink", &["Links.Flink"]),
    ("Blink", &["Links.Blink"]),
    ("p", &["TreeNode.p", "TreeNode.Base.p"]),
    (
        "RangeSize",
        &["TreeNode.RangeSize", "TreeNode.Base.RangeSize"],
    ),
    ("SessionId", &["TreeNode.SessionId"]),
    (
        "RightChild",
        &[
            "RtlTable.BalancedRoot.RightChild",
            "BalancedRoot.RightChild",
        ],
    ),
    (
        "NumberGenericTableElements",
        &["RtlTable.NumberGenericTableElements"],
    ),
];

/// Sanity bounds on profile constants (real values: 0x80 entries, 13 or 50 frames) and on
/// a symbol table's structure sizes (the largest verifier structure is 0x1A8 bytes).
const MAX_ENTRIES_PER_PAGE: usize = 0x1000;
/// Stack frames per log record: at most 255, as a record's depth is a u8 column.
const MAX_FRAMES: usize = 255;
const MAX_STRUCT: usize = 0x10000;
/// Pool tags a profile may list per log (`verifier.tags`).
const MAX_TAGS: usize = 8;

/// Where the per-driver entries are (`verifier.driver_list` in the profile).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverList {
    /// Win7+: VfSuspectDriversList, ViTargetDriversAvl and VF_TARGET_VERIFIED_DRIVER_DATA
    /// (spec 4.2); the default when the profile does not say.
    SuspectListAvl,
    /// Vista and older: MI_VERIFIER_DRIVER_ENTRY on MiSuspectDriverList (spec 4.1).
    MiList,
}

#[derive(Debug, Clone)]
pub struct VerifierLayout {
    pub driver_list: DriverList,
    /// MI_VERIFIER_DRIVER_ENTRY (`MiSuspectDriverList` members), for [`DriverList::MiList`].
    pub mi_entry: Option<Entry>,
    /// MM_DRIVER_VERIFIER_DATA (`MmVerifierData`).
    pub mm_data: Entry,
    /// VF_SUSPECT_DRIVER_ENTRY (`VfSuspectDriversList` members).
    pub suspect: Entry,
    /// VI_POOL_PAGE_HEADER, slot 0 of a tracker page.
    pub page_header: Entry,
    /// VI_POOL_ENTRY_INUSE; its size is the slot stride of a tracker page.
    pub pool_entry: Entry,
    /// VF_POOL_TRACE (pool log entry).
    pub pool_trace: Entry,
    /// IOV_IRP_TRACE (IRP log entry).
    pub irp_trace: Entry,
    pub avl_tree: Entry,
    /// VF_AVL_TABLE; its size is the stride of the `Tables` array.
    pub avl_table: Entry,
    /// RTL_BALANCED_LINKS at the start of each AVL node.
    pub links: Entry,
    /// VF_TARGET_DRIVER, at `node_links` bytes into each AVL node.
    pub target: Entry,
    /// VF_TARGET_VERIFIED_DRIVER_DATA.
    pub verified: Entry,
    pub verified_signature: u64,
    pub page_signature: u64,
    pub entries_per_page: usize,
    pub pool_trace_frames: usize,
    pub irp_trace_frames: usize,
    pub node_links: u64,
    /// Pool tags of the pool log's buffer, tried in order when it is found without symbols
    /// (`verifier.tags.pool_trace`; VfPT when the profile does not say).
    pub pool_trace_tags: Vec<u32>,
    /// Pool tags of the IRP log's buffer (`verifier.tags.irp_trace`; VfIT by default).
    pub irp_trace_tags: Vec<u32>,
}

/// `verifier.tags.<name>`: a list of 4-character pool tags, or `default` when absent.
fn tags(
    p: &Profile,
    v: &serde_json::Map<String, Value>,
    name: &str,
    default: u32,
) -> Result<Vec<u32>> {
    let bad = |m: String| Error::format(0, format!("profile {}: verifier.tags.{name} {m}", p.name));
    let Some(list) = v.get("tags").and_then(|t| t.get(name)) else {
        return Ok(vec![default]);
    };
    let items = list
        .as_array()
        .filter(|a| (1..=MAX_TAGS).contains(&a.len()))
        .ok_or_else(|| bad(format!("must be a list of 1..{MAX_TAGS} tags")))?;
    items
        .iter()
        .map(|t| match t.as_str().map(str::as_bytes) {
            Some(&[a, b, c, d]) => Ok(u32::from_le_bytes([a, b, c, d])),
            _ => Err(bad(format!("{t} is not a 4-character tag"))),
        })
        .collect()
}

fn section(
    p: &Profile,
    v: &serde_json::Map<String, Value>,
    name: &str,
) -> Result<BTreeMap<String, Value>> {
    let s = v
        .get(name)
        .and_then(Value::as_object)
        .ok_or_else(|| Error::format(0, format!("profile {}: verifier.{name} missing", p.name)))?;
    Ok(s.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

impl VerifierLayout {
    pub fn from_profile(p: &Profile) -> Result<Self> {
        let v = p
            .extra
            .get("verifier")
            .and_then(Value::as_object)
            .ok_or_else(|| {
                Error::unsupported(format!("profile {} has no verifier section", p.name))
            })?;
        let driver_list = match v.get("driver_list").and_then(Value::as_str) {
            None | Some("suspect_list+avl") => DriverList::SuspectListAvl,
            Some("mi_list") => DriverList::MiList,
            Some(other) => {
                return Err(Error::format(
                    0,
                    format!(
                        "profile {}: verifier.driver_list {other:?} is unknown",
                        p.name
                    ),
                ))
            }
        };
        let entry = |name: &str| Entry::parse(&format!("verifier.{name}"), &section(p, v, name)?);
        // The Win7+ pieces do not exist in an MI-list profile: empty placeholders (any field
        // read from them is an error naming the structure).
        let win7 = |name: &str| {
            if driver_list == DriverList::MiList && !v.contains_key(name) {
                let raw = BTreeMap::from([("size".to_string(), Value::from("0x1"))]);
                Entry::parse(
                    &format!("verifier.{name} (absent from an MI-list profile)"),
                    &raw,
                )
            } else {
                entry(name)
            }
        };
        let consts = section(p, v, "constants")?;
        let constant = |name: &str| {
            consts
                .get(name)
                .and_then(Value::as_str)
                .and_then(parse_int)
                .ok_or_else(|| {
                    Error::format(
                        0,
                        format!("profile {}: verifier.constants.{name} missing", p.name),
                    )
                })
        };
        let mi_entry = match driver_list {
            DriverList::MiList => Some(entry("mi_verifier_driver_entry")?),
            DriverList::SuspectListAvl => None,
        };
        let l = Self {
            driver_list,
            mi_entry,
            mm_data: entry("mm_driver_verifier_data")?,
            suspect: win7("suspect_driver_entry")?,
            page_header: entry("pool_page_header")?,
            pool_entry: entry("pool_entry")?,
            pool_trace: entry("pool_trace")?,
            irp_trace: entry("irp_trace")?,
            avl_tree: win7("avl_tree")?,
            avl_table: win7("avl_table")?,
            links: win7("balanced_links")?,
            target: win7("target_driver")?,
            verified: win7("verified_driver_data")?,
            verified_signature: constant("verified_data_signature")?,
            page_signature: constant("pool_page_signature")?,
            entries_per_page: constant("entries_per_tracker_page")? as usize,
            pool_trace_frames: constant("pool_trace_frames")? as usize,
            irp_trace_frames: constant("irp_trace_frames")? as usize,
            node_links: match driver_list {
                DriverList::MiList => constant("avl_node_links").unwrap_or(0),
                DriverList::SuspectListAvl => constant("avl_node_links")?,
            },
            pool_trace_tags: tags(p, v, "pool_trace", TAG_POOL_TRACES)?,
            irp_trace_tags: tags(p, v, "irp_trace", TAG_IRP_TRACES)?,
        };
        l.validate(&p.name)?;
        Ok(l)
    }

    fn validate(&self, profile: &str) -> Result<()> {
        let bad = |m: String| Error::format(0, format!("profile {profile}: verifier {m}"));
        for e in self.entries().into_iter().chain(self.mi_entry.as_ref()) {
            if e.size == 0 || e.size > MAX_STRUCT {
                return Err(bad(format!("{} has size 0x{:x}", e.what, e.size)));
            }
        }
        if !(2..=MAX_ENTRIES_PER_PAGE).contains(&self.entries_per_page) {
            return Err(bad(format!(
                "entries_per_tracker_page {} out of range",
                self.entries_per_page
            )));
        }
        if self.pool_trace_frames > MAX_FRAMES || self.irp_trace_frames > MAX_FRAMES {
            return Err(bad("trace frame count out of range".into()));
        }
        Ok(())
    }

    fn entries(&self) -> [&Entry; 11] {
        [
            &self.mm_data,
            &self.suspect,
            &self.page_header,
            &self.pool_entry,
            &self.pool_trace,
            &self.irp_trace,
            &self.avl_tree,
            &self.avl_table,
            &self.links,
            &self.target,
            &self.verified,
        ]
    }

    fn entry_mut(&mut self, section: &str) -> Option<&mut Entry> {
        Some(match section {
            "mi_verifier_driver_entry" => self.mi_entry.as_mut()?,
            "mm_driver_verifier_data" => &mut self.mm_data,
            "suspect_driver_entry" => &mut self.suspect,
            "target_driver" => &mut self.target,
            "verified_driver_data" => &mut self.verified,
            "pool_trace" => &mut self.pool_trace,
            "irp_trace" => &mut self.irp_trace,
            "avl_tree" => &mut self.avl_tree,
            "avl_table" => &mut self.avl_table,
            "balanced_links" => &mut self.links,
            "pool_page_header" => &mut self.page_header,
            "pool_entry" => &mut self.pool_entry,
            _ => return None,
        })
    }

    /// Replace the profile's layouts with a symbol table's, structure by structure: a type is
    /// taken only when every field the profile names is found in it (so layouts never mix).
    pub fn apply_symbols(&mut self, syms: &Symbols, sources: &mut Sources) {
        for (section, ty) in SYMBOL_TYPES {
            let Some(t) = syms.types.get(ty) else {
                continue;
            };
            let Some(entry) = self.entry_mut(section) else {
                continue;
            };
            let names: Vec<String> = entry.names().map(str::to_string).collect();
            let mut found = Vec::new();
            let mut missing = None;
            for n in &names {
                match field_of(syms, ty, n) {
                    Some(f) if t.size == 0 || f.end() <= t.size => found.push((n.clone(), f)),
                    _ => {
                        missing = Some(n.clone());
                        break;
                    }
                }
            }
            if let (None, true) = (&missing, (1..=MAX_STRUCT).contains(&t.size)) {
                entry.replace(t.size, found);
                sources.insert(ty.into(), syms.source.clone());
            } else {
                sources.insert(
                    ty.into(),
                    format!(
                        "profile ({} lack {})",
                        syms.source,
                        missing.as_deref().unwrap_or("a plausible size")
                    ),
                );
                continue;
            }
            let frames = match section {
                "pool_trace" => &mut self.pool_trace_frames,
                "irp_trace" => &mut self.irp_trace_frames,
                _ => continue,
            };
            if let Some(n) = syms.array_count(ty, "StackTrace") {
                *frames = (n as usize).min(MAX_FRAMES);
            }
        }
    }
}

/// A profile field in an ISF type: its literal name (tables written from a profile), a dotted
/// path through embedded structures, a known alias, or the x64 SLIST_HEADER rule for
/// `X.Depth` (u16 at qword 0) and `X.Next` (qword 1).
fn field_of(syms: &Symbols, ty: &str, name: &str) -> Option<FieldAt> {
    if let Some(f) = syms.types.get(ty).and_then(|t| t.fields.get(name)) {
        return Some(*f);
    }
    if let Some(f) = syms.resolve(ty, name) {
        return Some(f);
    }
    let aliases = ALIASES.iter().find(|(n, _)| *n == name);
    if let Some(f) = aliases
        .into_iter()
        .flat_map(|(_, paths)| paths.iter())
        .find_map(|p| syms.resolve(ty, p))
    {
        return Some(f);
    }
    let (head, part) = name.rsplit_once('.')?;
    let off = syms.member_offset(ty, head)?;
    match part {
        "Depth" => FieldAt::at(off, 2, 0, 16),
        "Next" => FieldAt::at(off.checked_add(8)?, 8, 0, 64),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::Profile;

    fn profile(build: u32) -> Profile {
        Profile::for_build(build).unwrap().0
    }

    #[test]
    fn builtin_profiles_parse() {
        for build in [7601, 19041] {
            let l = VerifierLayout::from_profile(&profile(build)).unwrap();
            assert_eq!(l.verified_signature, 0x9876_1940);
            assert_eq!(l.page_signature, 0x2132_1345);
            assert_eq!(l.entries_per_page, 0x80);
            assert_eq!(l.pool_entry.size, 0x20);
            assert!(l.verified.field("PoolPageHeaders.Next").is_ok());
        }
        let vista = VerifierLayout::from_profile(&profile(6002)).unwrap();
        assert_eq!(vista.driver_list, DriverList::MiList);
        let mi = vista.mi_entry.as_ref().unwrap();
        assert_eq!(mi.size, 0xA0);
        assert_eq!(mi.field("PoolPageHeaders.Next").unwrap().offset(), 0x58);
        assert_eq!(mi.field("PeakNonPagedBytes").unwrap().offset(), 0x98);
        assert_eq!(vista.mm_data.size, 0x90);
        assert!(vista.verified.field("Signature").is_err());
        let w7 = VerifierLayout::from_profile(&profile(7601)).unwrap();
        assert_eq!(w7.driver_list, DriverList::SuspectListAvl);
        assert!(w7.mi_entry.is_none());
        assert_eq!(w7.avl_table.size, 0x70);
        assert_eq!(w7.target.field("VerifiedData").unwrap().offset(), 0x28);
    }

    #[test]
    fn per_build_layouts() {
        let tag = |t: &[u8; 4]| u32::from_le_bytes(*t);
        for build in [7601, 17763, 18363, 19041, 22000, 22631, 26100] {
            let l = VerifierLayout::from_profile(&profile(build)).unwrap();
            assert_eq!(l.driver_list, DriverList::SuspectListAvl, "{build}");
            assert_eq!(l.pool_entry.size, 0x20, "{build}");
            assert_eq!(l.node_links, 0x20, "{build}");
            assert_eq!(l.irp_trace.size, 0x80, "{build}");
            assert_eq!(l.irp_trace_frames, 13, "{build}");
            assert_eq!(l.irp_trace_tags, [tag(b"VfIT")], "{build}");
            let st = l.pool_trace.field("StackTrace").unwrap().offset();
            assert!(st + 8 * l.pool_trace_frames <= l.pool_trace.size, "{build}");
            let (size, frames, tags): (usize, usize, Vec<u32>) = if build >= 22000 {
                (0x1A8, 50, vec![tag(b"ViIn"), tag(b"VfPT")])
            } else {
                (0x80, 13, vec![tag(b"VfPT")])
            };
            assert_eq!(
                (l.pool_trace.size, l.pool_trace_frames, l.pool_trace_tags),
                (size, frames, tags),
                "{build}"
            );
        }
        let off = |e: &Entry, n: &str| e.field(n).unwrap().offset();
        // 17763 and 1903/1909 (the 17134-18362 column): counters from 0x60, no DifPluginData.
        for build in [17763, 18362, 18363] {
            let l = VerifierLayout::from_profile(&profile(build)).unwrap();
            assert_eq!(l.mm_data.size, 0xA8, "{build}");
            assert_eq!(off(&l.mm_data, "PagedBytes"), 0x50, "{build}");
            assert_eq!(l.verified.size, 0x120, "{build}");
            assert_eq!(
                off(&l.verified, "CurrentPagedPoolAllocations"),
                0x60,
                "{build}"
            );
            assert_eq!(off(&l.verified, "PeakNonPagedBytes"), 0x88, "{build}");
            assert_eq!(off(&l.target, "VerifiedData"), 0x38, "{build}");
        }
        let w11 = VerifierLayout::from_profile(&profile(22631)).unwrap();
        assert_eq!(w11.mm_data.size, 0xB0);
        assert_eq!(off(&w11.mm_data, "AllocationFreed"), 0x30);
        assert_eq!(off(&w11.mm_data, "Loads"), 0x34);
        assert_eq!(off(&w11.mm_data, "PagedBytes"), 0x58);
        assert_eq!(off(&w11.verified, "CurrentPagedPoolAllocations"), 0x70);
        assert_eq!(off(&w11.verified, "PeakNonPagedBytes"), 0x98);
        assert_eq!(off(&w11.suspect, "BaseName.Buffer"), 0x20);
        assert_eq!(w11.avl_tree.size, 0x28);
        let nkl = VerifierLayout::from_profile(&profile(26100)).unwrap();
        assert_eq!(nkl.mm_data.size, 0x98);
        assert_eq!(off(&nkl.mm_data, "VerifyMode"), 0x84);
        assert_eq!(nkl.suspect.size, 0x38);
        assert_eq!(off(&nkl.suspect, "BaseName.Length"), 0x28);
        assert_eq!(off(&nkl.suspect, "BaseName.Buffer"), 0x30);
        assert_eq!(nkl.avl_tree.size, 0x20);
        assert_eq!(off(&nkl.avl_tree, "TablesNo"), 0x18);
        assert_eq!(nkl.target.size, 0x48);
        assert_eq!(off(&nkl.target, "VerifiedData"), 0x40);
        assert!(nkl.target.field("SessionId").is_err());
        assert_eq!(nkl.verified.size, 0x120);
        assert_eq!(off(&nkl.verified, "PagedBytes"), 0x80);
    }

    #[test]
    fn profile_tags_are_checked() {
        let with = |tags: serde_json::Value| {
            let mut p = profile(26100);
            p.extra.get_mut("verifier").unwrap()["tags"]["pool_trace"] = tags;
            VerifierLayout::from_profile(&p)
        };
        assert!(with(serde_json::json!(["TooLong"])).is_err());
        assert!(with(serde_json::json!([])).is_err());
        assert!(with(serde_json::json!("ViIn")).is_err());
        let l = with(serde_json::json!(["Abcd"])).unwrap();
        assert_eq!(l.pool_trace_tags, [u32::from_le_bytes(*b"Abcd")]);
    }

    #[test]
    fn nested_isf_types_override() {
        let isf = r#"{
          "base_types": {"unsigned short": {"size": 2}, "unsigned long": {"size": 4},
                         "unsigned long long": {"size": 8}},
          "enums": {},
          "symbols": {},
          "user_types": {
            "_LIST_ENTRY": {"size": 16, "fields": {
              "Flink": {"offset": 0, "type": {"kind": "pointer"}},
              "Blink": {"offset": 8, "type": {"kind": "pointer"}}}},
            "_UNICODE_STRING": {"size": 16, "fields": {
              "Length": {"offset": 0, "type": {"kind": "base", "name": "unsigned short"}},
              "Buffer": {"offset": 8, "type": {"kind": "pointer"}}}},
            "_VF_SUSPECT_DRIVER_ENTRY": {"size": 56, "fields": {
              "Links": {"offset": 0, "type": {"kind": "struct", "name": "_LIST_ENTRY"}},
              "Loads": {"offset": 16, "type": {"kind": "base", "name": "unsigned long"}},
              "Unloads": {"offset": 20, "type": {"kind": "base", "name": "unsigned long"}},
              "FullName": {"offset": 24, "type": {"kind": "struct", "name": "_UNICODE_STRING"}},
              "BaseName": {"offset": 40, "type": {"kind": "struct", "name": "_UNICODE_STRING"}}}},
            "_SLIST_HEADER": {"size": 16, "fields": {
              "Alignment": {"offset": 0, "type": {"kind": "base", "name": "unsigned long long"}}}},
            "_VF_POOL_TRACE": {"size": 424, "fields": {
              "Address": {"offset": 0, "type": {"kind": "pointer"}},
              "Size": {"offset": 8, "type": {"kind": "base", "name": "unsigned long long"}},
              "Thread": {"offset": 16, "type": {"kind": "pointer"}},
              "StackTrace": {"offset": 24, "type": {"kind": "array", "count": 50,
                             "subtype": {"kind": "pointer"}}}}},
            "_VF_TARGET_VERIFIED_DRIVER_DATA": {"size": 304, "fields": {
              "SuspectDriverEntry": {"offset": 0, "type": {"kind": "pointer"}},
              "Signature": {"offset": 40, "type": {"kind": "base", "name": "unsigned long long"}},
              "PoolPageHeaders": {"offset": 64, "type": {"kind": "union", "name": "_SLIST_HEADER"}}}}
          }
        }"#;
        let syms = Symbols::from_isf(isf, "t.json").unwrap();
        let mut l = VerifierLayout::from_profile(&profile(19041)).unwrap();
        let mut src = Sources::new();
        l.apply_symbols(&syms, &mut src);
        assert_eq!(l.suspect.size, 56);
        assert_eq!(l.suspect.field("BaseName.Buffer").unwrap().offset(), 48);
        assert_eq!(l.suspect.field("BaseName.Length").unwrap().width(), 2);
        assert_eq!(l.suspect.field("Flink").unwrap().offset(), 0);
        assert_eq!(l.pool_trace.size, 424);
        assert_eq!(l.pool_trace_frames, 50);
        assert_eq!(src["_VF_SUSPECT_DRIVER_ENTRY"], "symbols t.json");
        // The verified-data type lacks the counters: the profile's layout stays whole.
        assert_eq!(l.verified.size, 0x130);
        assert!(src["_VF_TARGET_VERIFIED_DRIVER_DATA"].starts_with("profile"));
        assert_eq!(
            field_of(
                &syms,
                "_VF_TARGET_VERIFIED_DRIVER_DATA",
                "PoolPageHeaders.Next"
            )
            .unwrap()
            .offset(),
            0x48
        );
    }
}
