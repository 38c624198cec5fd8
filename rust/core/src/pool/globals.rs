//! Kernel variables the pool analyses need, and where each came from: KDBG, or a profile
//! heuristic (a fixed distance from a KDBG-named variable, as volatility2 uses).

use std::collections::BTreeMap;

use super::layout::PoolLayout;
use crate::bytes::parse_int;
use crate::error::{Error, Result};
use crate::kernel::{Kdbg, Symbols};
use crate::memory::Translator;

/// Name → how the figure was found; the report's `sources` section.
pub type Sources = BTreeMap<String, String>;

/// Where kernel variables are found: KDBG, an optional symbol table, the profile.
#[derive(Clone, Copy)]
pub struct Kernel<'a> {
    pub kdbg: &'a Kdbg,
    pub symbols: Option<&'a Symbols>,
    pub layout: &'a PoolLayout,
}

/// The address of variable `name`: from the symbol table when given, else KDBG's field, else
/// the profile's distance from another KDBG variable (recorded as heuristic in `sources`).
pub fn address_of(name: &str, k: Kernel, sources: &mut Sources) -> Result<u64> {
    let (kdbg, layout) = (k.kdbg, k.layout);
    if let (Some(s), Some(base)) = (k.symbols, kdbg.kern_base()) {
        if let Some(va) = s.address(name, base) {
            sources.insert(name.into(), format!("symbols {}", s.origin));
            return Ok(va);
        }
    }
    if let Some(va) = kdbg.field(name).filter(|&v| v != 0) {
        sources.insert(name.into(), "KDBG".into());
        return Ok(va);
    }
    let g = layout.globals.get(name).ok_or_else(|| {
        Error::unsupported(format!(
            "{name}: not in KDBG and the profile gives no way to find it"
        ))
    })?;
    let base = kdbg
        .field(&g.relative_to)
        .filter(|&v| v != 0)
        .ok_or_else(|| Error::unsupported(format!("{name}: KDBG lacks {}", g.relative_to)))?;
    let delta = g.delta.trim();
    let (neg, mag) = match delta.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, delta),
    };
    let mag = parse_int(mag)
        .ok_or_else(|| Error::format(0, format!("profile global {name}: delta {delta:?}")))?;
    let va = if neg {
        base.wrapping_sub(mag)
    } else {
        base.wrapping_add(mag)
    };
    sources.insert(
        name.into(),
        format!(
            "heuristic: {} {delta} ({})",
            g.relative_to,
            g.heuristic.as_deref().unwrap_or("profile")
        ),
    );
    Ok(va)
}

/// The value of variable `name` (read with the profile's width, default 8).
pub fn value_of(tr: &mut Translator, name: &str, k: Kernel, sources: &mut Sources) -> Result<u64> {
    let va = address_of(name, k, sources)?;
    let width = k.layout.globals.get(name).map_or(8, |g| g.width);
    match width {
        4 => tr.read_u32(va).map(u64::from),
        _ => tr.read_u64(va),
    }
    .map_err(|e| e.context(name))
}
