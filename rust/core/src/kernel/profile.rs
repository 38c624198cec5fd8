//! Structure layouts per Windows build, as data: JSON files shipped in `profiles/`, chosen by the
//! header's build number, or supplied by the user. No layout offset lives in code.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::bytes::parse_int;
use crate::error::{Error, Result};

/// The built-in profiles, one per build family (file name, JSON text).
pub const BUILTIN: &[(&str, &str)] = &[
    (
        "vista-x64.json",
        include_str!("../../profiles/vista-x64.json"),
    ),
    (
        "win7sp1-x64.json",
        include_str!("../../profiles/win7sp1-x64.json"),
    ),
    (
        "win10-17763-x64.json",
        include_str!("../../profiles/win10-17763-x64.json"),
    ),
    (
        "win10-18362-x64.json",
        include_str!("../../profiles/win10-18362-x64.json"),
    ),
    (
        "win10-19041-x64.json",
        include_str!("../../profiles/win10-19041-x64.json"),
    ),
    (
        "win11-22000-x64.json",
        include_str!("../../profiles/win11-22000-x64.json"),
    ),
    (
        "win11-22621-x64.json",
        include_str!("../../profiles/win11-22621-x64.json"),
    ),
    (
        "win11-26100-x64.json",
        include_str!("../../profiles/win11-26100-x64.json"),
    ),
];

#[derive(Debug, Clone, Deserialize)]
pub struct BuildRange {
    pub min: u32,
    pub max: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct KdbgField {
    pub offset: String,
    /// "value": the field is the figure; "address": the field is the VA of a kernel variable.
    pub kind: String,
    /// Type of the variable an "address" field points to: u32, u64 or cstr.
    #[serde(default)]
    pub target: Option<String>,
    /// Width in bytes of a "value" field (default 8).
    #[serde(default)]
    pub width: Option<u8>,
    /// Why a fact is not certain; carried into output so that users can judge the figure.
    #[serde(default)]
    pub unsure: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct KdbgLayout {
    pub size: String,
    pub fields: BTreeMap<String, KdbgField>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Profile {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub builds: BuildRange,
    #[serde(default)]
    pub sources: BTreeMap<String, String>,
    pub kdbg: KdbgLayout,
    pub ldr_data_table_entry: BTreeMap<String, String>,
    /// Sections that later analyses read (pool, verifier, ...), kept as raw JSON.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl Profile {
    pub fn from_json(text: &str) -> Result<Self> {
        let p: Profile = serde_json::from_str(text)
            .map_err(|e| Error::format(0, format!("profile JSON: {e}")))?;
        p.validate()?;
        Ok(p)
    }

    fn validate(&self) -> Result<()> {
        let bad = |what: String| Error::format(0, format!("profile {}: {what}", self.name));
        parse_int(&self.kdbg.size)
            .ok_or_else(|| bad(format!("kdbg.size {:?} is not a number", self.kdbg.size)))?;
        for (name, f) in &self.kdbg.fields {
            parse_int(&f.offset)
                .ok_or_else(|| bad(format!("kdbg field {name}: offset {:?}", f.offset)))?;
        }
        for (name, v) in &self.ldr_data_table_entry {
            parse_int(v).ok_or_else(|| bad(format!("ldr_data_table_entry.{name}: {v:?}")))?;
        }
        Ok(())
    }

    /// The built-in profile for `build`: the family whose range holds it, else the nearest older
    /// family (else the oldest). The second value says which rule chose it.
    pub fn for_build(build: u32) -> Result<(Profile, String)> {
        let all: Vec<Profile> = BUILTIN
            .iter()
            .filter_map(|(_, text)| Profile::from_json(text).ok())
            .collect();
        if let Some(p) = all
            .iter()
            .find(|p| p.builds.min <= build && build <= p.builds.max)
        {
            return Ok((
                p.clone(),
                format!(
                    "profile {} (builds {}..{}) matches build {build}",
                    p.name, p.builds.min, p.builds.max
                ),
            ));
        }
        let older = all
            .iter()
            .filter(|p| p.builds.min <= build)
            .max_by_key(|p| p.builds.min);
        let chosen = older.or_else(|| all.iter().min_by_key(|p| p.builds.min));
        let p = chosen.ok_or_else(|| Error::format(0, "no built-in profile parses"))?;
        Ok((
            p.clone(),
            format!(
                "no profile covers build {build}; using the nearest older family {}",
                p.name
            ),
        ))
    }

    pub fn kdbg_size(&self) -> u64 {
        parse_int(&self.kdbg.size).unwrap_or(0)
    }

    pub fn ldr(&self, field: &str) -> Option<u64> {
        self.ldr_data_table_entry
            .get(field)
            .and_then(|v| parse_int(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builtin() -> Vec<Profile> {
        BUILTIN
            .iter()
            .map(|(file, text)| Profile::from_json(text).unwrap_or_else(|e| panic!("{file}: {e}")))
            .collect()
    }

    #[test]
    fn every_builtin_parses_and_ranges_are_disjoint() {
        let mut all = builtin();
        for (p, (file, _)) in all.iter().zip(BUILTIN) {
            assert_eq!(format!("{}.json", p.name), *file);
            assert!(p.builds.min <= p.builds.max, "{}", p.name);
            assert!(
                !p.description.is_empty() && !p.sources.is_empty(),
                "{}",
                p.name
            );
            assert!(p.extra.contains_key("pool") && p.extra.contains_key("verifier"));
            assert!(p.kdbg_size() > 0 && p.ldr("BaseDllName").is_some());
            crate::pool::PoolLayout::from_profile(p).unwrap_or_else(|e| panic!("{e}"));
        }
        all.sort_by_key(|p| p.builds.min);
        for w in all.windows(2) {
            assert!(
                w[0].builds.max < w[1].builds.min,
                "{} and {} overlap",
                w[0].name,
                w[1].name
            );
        }
    }

    #[test]
    fn build_selects_its_family_or_the_nearest_older_one() {
        for (build, name, exact) in [
            (6002, "vista-x64", true),
            (7601, "win7sp1-x64", true),
            (9600, "win7sp1-x64", false),
            (17763, "win10-17763-x64", true),
            (18361, "win10-17763-x64", true),
            (18362, "win10-18362-x64", true),
            (18363, "win10-18362-x64", true),
            (19040, "win10-18362-x64", true),
            (19041, "win10-19041-x64", true),
            (19045, "win10-19041-x64", true),
            (20348, "win10-19041-x64", false),
            (22000, "win11-22000-x64", true),
            (22621, "win11-22621-x64", true),
            (22631, "win11-22621-x64", true),
            (26100, "win11-26100-x64", true),
            (26200, "win11-26100-x64", true),
            (30000, "win11-26100-x64", false),
        ] {
            let (p, why) = Profile::for_build(build).unwrap();
            assert_eq!(p.name, name, "build {build}");
            assert_eq!(
                why.contains("nearest older family"),
                !exact,
                "{build}: {why}"
            );
        }
        // Older than every family: the oldest one.
        assert_eq!(Profile::for_build(2600).unwrap().0.name, "vista-x64");
    }
}
