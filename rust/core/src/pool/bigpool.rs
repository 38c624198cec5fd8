//! The big-pool table (POOL_TRACKER_BIG_PAGES): allocations of a page or more, which have no
//! POOL_HEADER and are found only here.

use super::globals::{self, Kernel, Sources};
use super::pages::Pool;
use super::tag;
use crate::error::{Error, Result};
use crate::memory::Translator;

/// MemProcFS's bound on PoolBigPageTableSize; larger is not a big-pool table.
const MAX_ENTRIES: u64 = 0x100_0000;
/// ReactOS POOL_BIG_TABLE_ENTRY_FREE: a freed (or never used) entry has Va bit 0 set.
const FREE_BIT: u64 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BigPage {
    pub va: u64,
    pub tag: u32,
    pub bytes: u64,
    pub pool_type: u32,
    pub pool: Pool,
    pub free: bool,
}

#[derive(Debug, Clone, Default)]
pub struct BigPool {
    pub va: u64,
    pub entries: u64,
    /// Entries with a non-zero tag (freed ones included, marked `free`), in table order.
    pub pages: Vec<BigPage>,
}

impl BigPool {
    pub fn read(tr: &mut Translator, k: Kernel, sources: &mut Sources) -> Result<Self> {
        let layout = k.layout;
        let table = globals::value_of(tr, "PoolBigPageTable", k, sources)?;
        let given = globals::value_of(tr, "PoolBigPageTableSize", k, sources);
        if table == 0 {
            return Err(Error::not_present(table, "PoolBigPageTable is null"));
        }
        // The kernel's sizes are powers of two (ExpResizeBigPageTable doubles the table). A
        // count that is not, is past the bound or is not found is refused; the table's own
        // entry (the kernel registers the table in itself with its size) is then asked instead.
        let entries = match given {
            Ok(n) if n.is_power_of_two() && n <= MAX_ENTRIES => n,
            other => {
                let why = match other {
                    Ok(n) => format!(
                        "PoolBigPageTableSize {n} is not a power of two up to 0x{MAX_ENTRIES:x}"
                    ),
                    Err(e) => format!("PoolBigPageTableSize not found ({e})"),
                };
                let Some(n) = globals::big_table_self_size(tr, k, table) else {
                    return Err(Error::not_present(
                        table,
                        format!("PoolBigPageTable 0x{table:x}: {why}, and the table holds no entry of its own giving its size"),
                    ));
                };
                sources.insert(
                    "PoolBigPageTableSize".into(),
                    format!(
                        "heuristic: {n}, from the table's own entry (its size); {why}, refused"
                    ),
                );
                n
            }
        };
        let e = &layout.big_page;
        let (va_f, key_f, type_f, bytes_f) = (
            e.field("Va")?,
            e.field("Key")?,
            e.field("PoolType")?,
            e.field("NumberOfBytes")?,
        );
        let raw = tr
            .read_vec(table, entries as usize * e.size)
            .map_err(|e| e.context("PoolBigPageTable"))?;
        let pages = raw
            .chunks_exact(e.size)
            .filter_map(|row| {
                let key = key_f.read(row) as u32;
                let va = va_f.read(row);
                if key == 0 {
                    return None;
                }
                let pool_type = type_f.read(row) as u32;
                Some(BigPage {
                    va: va & !FREE_BIT,
                    tag: tag::normalize(key),
                    bytes: bytes_f.read(row),
                    pool_type,
                    // Big pages store the requested POOL_TYPE: bit 0 paged, 0x20 session.
                    pool: Pool::classify(
                        u64::from(pool_type),
                        layout.paged_mask,
                        layout.session_mask,
                    ),
                    free: va & FREE_BIT != 0,
                })
            })
            .collect();
        Ok(Self {
            va: table,
            entries,
            pages,
        })
    }
}
