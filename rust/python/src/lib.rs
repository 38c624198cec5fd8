//! The PyO3 layer: Python classes that wrap poolscope-core types. No logic lives here: each
//! method converts arguments, releases the GIL around the core call, and converts the result.

use std::ffi::{c_int, CStr};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use poolscope_core::findings::Thresholds;
use poolscope_core::kernel::{bugcheck, profile, Kdbg as CoreKdbg, KdbgSource, Profile, Symbols};
use poolscope_core::pool::{tag, Blocks, Keep, SortBy};
use poolscope_core::scan::{self, ScanOptions};
use poolscope_core::{Dump as CoreDump, DumpOptions, Error, ErrorKind, Location};
use pyo3::create_exception;
use pyo3::exceptions::{PyBufferError, PyException, PyOSError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

create_exception!(
    poolscope,
    PoolscopeError,
    PyException,
    "Base class of poolscope's errors."
);
create_exception!(
    poolscope,
    DumpFormatError,
    PoolscopeError,
    "The file is not a well-formed dump (see .offset, .reason)."
);
create_exception!(
    poolscope,
    UnsupportedDumpError,
    PoolscopeError,
    "A dump of a kind poolscope cannot scan (see .reason)."
);
create_exception!(
    poolscope,
    MemoryNotPresent,
    PoolscopeError,
    "An address not present in the page tables or not stored in the dump (see .address)."
);
create_exception!(
    poolscope,
    LimitExceeded,
    PoolscopeError,
    "A configured limit was hit (e.g. decompressed size)."
);
create_exception!(
    poolscope,
    SymbolsError,
    PoolscopeError,
    "A symbol file (PDB) that is malformed or is not the dump's kernel's (see .reason)."
);

/// `DumpIOError`: an operating-system error while opening or reading a dump (its message names
/// the path), both a `PoolscopeError` and an `OSError`. Created at module init (two bases).
fn io_error_type(py: Python<'_>) -> Option<Bound<'_, pyo3::types::PyType>> {
    let m = py.import("poolscope._native").ok()?;
    m.getattr("DumpIOError").ok()?.cast_into().ok()
}

/// Raise the typed exception, with `reason`, `offset`, `address` and `address_space` attributes.
fn to_py(py: Python<'_>, e: Error) -> PyErr {
    let msg = e.to_string();
    let err = match e.kind {
        ErrorKind::Format => DumpFormatError::new_err(msg),
        ErrorKind::Unsupported => UnsupportedDumpError::new_err(msg),
        ErrorKind::NotPresent => MemoryNotPresent::new_err(msg),
        ErrorKind::Limit => LimitExceeded::new_err(msg),
        ErrorKind::Io => match io_error_type(py) {
            Some(t) => PyErr::from_type(t, msg),
            None => return PyOSError::new_err(msg),
        },
        ErrorKind::Symbols => SymbolsError::new_err(msg),
    };
    let value = err.value(py);
    let (offset, address, space) = match e.location {
        Location::None => (None, None, None),
        Location::FileOffset(o) => (Some(o), None, None),
        Location::Physical(a) => (None, Some(a), Some("physical")),
        Location::Virtual(a) => (None, Some(a), Some("virtual")),
    };
    let _ = value.setattr("reason", e.reason);
    let _ = value.setattr("offset", offset);
    let _ = value.setattr("address", address);
    let _ = value.setattr("address_space", space);
    err
}

#[pyclass(frozen, module = "poolscope._native")]
struct Bugcheck {
    #[pyo3(get)]
    code: u32,
    #[pyo3(get)]
    name: Option<String>,
    #[pyo3(get)]
    params: Vec<u64>,
    #[pyo3(get)]
    meanings: Vec<String>,
}

#[pymethods]
impl Bugcheck {
    fn __repr__(&self) -> String {
        let p: Vec<String> = self.params.iter().map(|p| format!("0x{p:x}")).collect();
        format!(
            "Bugcheck(0x{:x} {}, [{}])",
            self.code,
            self.name.as_deref().unwrap_or("?"),
            p.join(", ")
        )
    }
}

#[pyclass(frozen, module = "poolscope._native", get_all)]
struct Header {
    major_version: u32,
    minor_version: u32,
    build: u32,
    directory_table_base: u64,
    pfn_database: u64,
    ps_loaded_module_list: u64,
    ps_active_process_head: u64,
    machine_image_type: u32,
    number_processors: u32,
    bugcheck: Py<Bugcheck>,
    kd_debugger_data_block: u64,
    runs: Vec<(u64, u64)>,
    number_of_pages: u64,
    dump_type: u32,
    required_dump_space: u64,
    system_time: u64,
    system_time_unix: Option<f64>,
    system_up_time: u64,
    uptime_s: f64,
    comment: String,
    mini_dump_fields: u32,
    secondary_data_state: u32,
    product_type: u32,
    suite_mask: u32,
    writer_status: u32,
    kd_secondary_version: u8,
    attributes: u32,
    boot_id: u32,
    context_rip: u64,
    context_rsp: u64,
    exception_code: u32,
    exception_address: u64,
}

#[pyclass(frozen, module = "poolscope._native", get_all)]
struct Kdbg {
    va: Option<u64>,
    /// "header_pointer", "decoded", "image_scan" or "physical_scan".
    source: String,
    size: u32,
    encoded: bool,
    fields: Py<PyDict>,
    values: Py<PyDict>,
    strings: Py<PyDict>,
    keys: Option<(u64, u64, u64)>,
    notes: Vec<String>,
    kern_base: Option<u64>,
    nt_build_lab: Option<String>,
    /// Which step found the block: "header_pointer", "kd_copy_data_block",
    /// "image_owner_tag_scan" or "physical_owner_tag_scan".
    located_by: String,
    /// The header's KdDebuggerDataBlock as written (0 = missing).
    header_pointer: u64,
    /// Why the header's pointer was not used (None when it was).
    header_pointer_problem: Option<String>,
    /// nt's image (base, size, how it was found) when a step used it.
    nt_image: Option<(u64, u64, String)>,
    /// VA of the KdCopyDataBlock code that named the block or gave its keys.
    kd_copy_data_block: Option<u64>,
    /// One sentence: how the block was found (also in the dump's notes).
    description: String,
}

#[pyclass(frozen, module = "poolscope._native", get_all)]
#[derive(Clone)]
struct Module {
    name: String,
    path: String,
    base: u64,
    size: u64,
    entry: u64,
}

#[pymethods]
impl Module {
    fn __repr__(&self) -> String {
        format!(
            "Module({:?}, base=0x{:x}, size=0x{:x})",
            self.name, self.base, self.size
        )
    }
}

#[pyclass(frozen, module = "poolscope._native", get_all)]
struct Translation {
    va: u64,
    pa: u64,
    page_size: u64,
    transition: bool,
}

#[pymethods]
impl Translation {
    fn __repr__(&self) -> String {
        format!(
            "Translation(va=0x{:x}, pa=0x{:x}, page_size=0x{:x})",
            self.va, self.pa, self.page_size
        )
    }
}

/// (PDB name, GUID, age, store id, how it was found).
type CodeViewTuple = (String, String, u32, String, String);

/// An open dump. Methods release the GIL; `close()` (or leaving a `with` block) unmaps it.
#[pyclass(subclass, module = "poolscope._native")]
struct Dump {
    inner: RwLock<Option<Arc<CoreDump>>>,
    #[pyo3(get)]
    path: String,
}

impl Dump {
    fn get(&self) -> PyResult<Arc<CoreDump>> {
        let guard = self
            .inner
            .read()
            .map_err(|_| PyValueError::new_err("dump lock poisoned"))?;
        guard
            .clone()
            .ok_or_else(|| PyValueError::new_err("I/O operation on a closed dump"))
    }
}

fn source_name(s: &KdbgSource) -> &'static str {
    match s {
        KdbgSource::HeaderPointer => "header_pointer",
        KdbgSource::Decoded { .. } => "decoded",
        KdbgSource::ImageScan => "image_scan",
        KdbgSource::PhysicalScan { .. } => "physical_scan",
    }
}

fn map_dict<'py, V: IntoPyObject<'py> + Clone>(
    py: Python<'py>,
    m: &std::collections::BTreeMap<String, V>,
) -> PyResult<Py<PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in m {
        d.set_item(k, v.clone())?;
    }
    Ok(d.unbind())
}

fn kdbg_to_py(py: Python<'_>, k: &CoreKdbg) -> PyResult<Kdbg> {
    let keys = match k.source {
        KdbgSource::Decoded {
            kdp_data_block_encoded,
            ki_wait_never,
            ki_wait_always,
        } => Some((kdp_data_block_encoded, ki_wait_never, ki_wait_always)),
        _ => None,
    };
    Ok(Kdbg {
        va: k.va,
        source: source_name(&k.source).into(),
        size: k.size,
        encoded: keys.is_some(),
        fields: map_dict(py, &k.fields)?,
        values: map_dict(py, &k.values)?,
        strings: map_dict(py, &k.strings)?,
        keys,
        notes: k.notes.clone(),
        kern_base: k.kern_base(),
        nt_build_lab: k.strings.get("NtBuildLab").cloned(),
        located_by: k.located.method.name().into(),
        header_pointer: k.located.header_pointer,
        header_pointer_problem: k.located.header_pointer_problem.clone(),
        nt_image: k
            .located
            .nt_image
            .as_ref()
            .map(|n| (n.base, n.size, n.found_by.clone())),
        kd_copy_data_block: k.located.kd_copy_data_block,
        description: k.describe(),
    })
}

#[pymethods]
impl Dump {
    #[new]
    #[pyo3(signature = (path, *, max_decompressed=None, spool_dir=None, profile_json=None, symbols_json=None, symbols_origin=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        max_decompressed: Option<u64>,
        spool_dir: Option<PathBuf>,
        profile_json: Option<String>,
        symbols_json: Option<String>,
        symbols_origin: Option<String>,
    ) -> PyResult<Self> {
        let mut opts = DumpOptions::default();
        if let Some(m) = max_decompressed {
            opts.open.max_decompressed = m;
        }
        opts.open.spool_dir = spool_dir;
        if let Some(text) = profile_json {
            opts.profile = Some(Profile::from_json(&text).map_err(|e| to_py(py, e))?);
        }
        if let Some(text) = symbols_json {
            let origin = symbols_origin.unwrap_or_else(|| "(ISF)".into());
            opts.symbols = Some(
                py.detach(|| Symbols::from_isf(&text, &origin))
                    .map_err(|e| to_py(py, e))?,
            );
        }
        let p = path.clone();
        let dump = py
            .detach(move || CoreDump::open(&p, &opts))
            .map_err(|e| to_py(py, e))?;
        Ok(Self {
            inner: RwLock::new(Some(Arc::new(dump))),
            path: path.display().to_string(),
        })
    }

    fn close(&self) {
        if let Ok(mut g) = self.inner.write() {
            *g = None;
        }
    }

    #[getter]
    fn closed(&self) -> bool {
        self.inner.read().map(|g| g.is_none()).unwrap_or(true)
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.close();
        false
    }

    #[getter]
    fn header(&self, py: Python<'_>) -> PyResult<Header> {
        let d = self.get()?;
        let h = d.header();
        let params = h.bugcheck_parameters;
        let bugcheck = Py::new(
            py,
            Bugcheck {
                code: h.bugcheck_code,
                name: bugcheck::name(h.bugcheck_code),
                params: params.to_vec(),
                meanings: bugcheck::parameter_meanings(h.bugcheck_code, &params).to_vec(),
            },
        )?;
        Ok(Header {
            major_version: h.major_version,
            minor_version: h.minor_version,
            build: h.build(),
            directory_table_base: h.directory_table_base,
            pfn_database: h.pfn_database,
            ps_loaded_module_list: h.ps_loaded_module_list,
            ps_active_process_head: h.ps_active_process_head,
            machine_image_type: h.machine_image_type,
            number_processors: h.number_processors,
            bugcheck,
            kd_debugger_data_block: h.kd_debugger_data_block,
            runs: h.runs.iter().map(|r| (r.base_page, r.page_count)).collect(),
            number_of_pages: h.number_of_pages,
            dump_type: h.dump_type_raw,
            required_dump_space: h.required_dump_space,
            system_time: h.system_time,
            system_time_unix: h.system_time_unix(),
            system_up_time: h.system_up_time,
            uptime_s: h.uptime_seconds(),
            comment: h.comment.clone(),
            mini_dump_fields: h.mini_dump_fields,
            secondary_data_state: h.secondary_data_state,
            product_type: h.product_type,
            suite_mask: h.suite_mask,
            writer_status: h.writer_status,
            kd_secondary_version: h.kd_secondary_version,
            attributes: h.attributes,
            boot_id: h.boot_id,
            context_rip: h.context_rip,
            context_rsp: h.context_rsp,
            exception_code: h.exception_code,
            exception_address: h.exception_address,
        })
    }

    /// "full", "kernel_bitmap", "complete_bitmap", "live_kernel_bitmap", "kernel_memory", ...
    #[getter]
    fn dump_type(&self) -> PyResult<&'static str> {
        Ok(self.get()?.dump_type().name())
    }

    #[getter]
    fn file_size(&self) -> PyResult<u64> {
        Ok(self.get()?.container.file_size())
    }

    #[getter]
    fn decompressed(&self) -> PyResult<bool> {
        Ok(self.get()?.container.decompressed)
    }

    /// None, or the file's cut: (expected_size, actual_size, pages_expected, pages_missing).
    #[getter]
    fn truncated(&self) -> PyResult<Option<(u64, u64, u64, u64)>> {
        Ok(self.get()?.container.truncated.map(|t| {
            (
                t.expected_size,
                t.actual_size,
                t.pages_expected,
                t.pages_missing,
            )
        }))
    }

    #[getter]
    fn notes(&self) -> PyResult<Vec<String>> {
        Ok(self.get()?.notes.clone())
    }

    /// The kernel's PDB from nt's RSDS record: (name, GUID, age, store id, how found), or None.
    #[getter]
    fn codeview(&self) -> PyResult<Option<CodeViewTuple>> {
        let d = self.get()?;
        Ok(d.codeview.as_ref().ok().map(|c| {
            (
                c.id.name.clone(),
                c.id.guid(),
                c.id.age,
                c.id.store_id(),
                c.found_by.clone(),
            )
        }))
    }

    /// Why nt's RSDS record could not be read (None when it was).
    #[getter]
    fn codeview_problem(&self) -> PyResult<Option<String>> {
        Ok(self.get()?.codeview.as_ref().err().cloned())
    }

    /// What `sources` says of figures read with the symbols in use (None without symbols).
    #[getter]
    fn symbols_source(&self) -> PyResult<Option<String>> {
        Ok(self.get()?.symbols.as_ref().map(|s| s.source.clone()))
    }

    /// Use a PDB's symbols (bytes of the file; `file` names it): refused with `SymbolsError`
    /// when its GUID/age are not those of nt's RSDS record. Only before any analysis runs.
    fn use_pdb(&self, py: Python<'_>, data: &[u8], file: String) -> PyResult<()> {
        let pdb = py
            .detach(|| poolscope_core::kernel::pdb::read(data, &file))
            .map_err(|e| to_py(py, e))?;
        let mut guard = self
            .inner
            .write()
            .map_err(|_| PyValueError::new_err("dump lock poisoned"))?;
        let arc = guard
            .as_mut()
            .ok_or_else(|| PyValueError::new_err("I/O operation on a closed dump"))?;
        let dump = Arc::get_mut(arc)
            .ok_or_else(|| PyValueError::new_err("symbols can only be set before analyses run"))?;
        dump.use_pdb(pdb).map_err(|e| to_py(py, e))
    }

    #[getter]
    fn profile_name(&self) -> PyResult<String> {
        Ok(self.get()?.profile.name.clone())
    }

    #[getter]
    fn kdbg(&self, py: Python<'_>) -> PyResult<Option<Kdbg>> {
        let d = self.get()?;
        d.kdbg.as_ref().map(|k| kdbg_to_py(py, k)).transpose()
    }

    #[getter]
    fn kernel_base(&self) -> PyResult<Option<u64>> {
        Ok(self.get()?.kernel_base())
    }

    fn modules(&self) -> PyResult<Vec<Module>> {
        let d = self.get()?;
        Ok(d.modules
            .list
            .iter()
            .map(|m| Module {
                name: m.name.clone(),
                path: m.path.clone(),
                base: m.base,
                size: m.size,
                entry: m.entry,
            })
            .collect())
    }

    fn symbolize(&self, addr: u64) -> PyResult<Option<String>> {
        Ok(self.get()?.symbolize(addr))
    }

    fn read_physical<'py>(
        &self,
        py: Python<'py>,
        pa: u64,
        n: usize,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let d = self.get()?;
        let v = py
            .detach(|| d.read_physical(pa, n))
            .map_err(|e| to_py(py, e))?;
        Ok(PyBytes::new(py, &v))
    }

    fn read_virtual<'py>(
        &self,
        py: Python<'py>,
        va: u64,
        n: usize,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let d = self.get()?;
        let v = py
            .detach(|| d.read_virtual(va, n))
            .map_err(|e| to_py(py, e))?;
        Ok(PyBytes::new(py, &v))
    }

    fn translate(&self, py: Python<'_>, va: u64) -> PyResult<Translation> {
        let d = self.get()?;
        let t = d.translate(va).map_err(|e| to_py(py, e))?;
        Ok(Translation {
            va,
            pa: t.pa,
            page_size: t.page_size,
            transition: t.transition,
        })
    }

    /// Present PFNs as (first PFN, count) runs, ascending.
    fn physical_runs(&self, py: Python<'_>) -> PyResult<Vec<(u64, u64)>> {
        let d = self.get()?;
        Ok(py.detach(|| {
            d.present_runs()
                .iter()
                .map(|r| (r.base_page, r.page_count))
                .collect()
        }))
    }

    /// Present PFNs as little-endian u64 bytes (the Python layer wraps them in an array('Q')).
    fn physical_pages_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let d = self.get()?;
        let v: Vec<u8> = py.detach(|| {
            d.present_runs()
                .iter()
                .flat_map(|r| (r.base_page..r.base_page + r.page_count).flat_map(u64::to_le_bytes))
                .collect()
        });
        Ok(PyBytes::new(py, &v))
    }

    /// Present PFNs, ascending, as an `array.array('Q')`.
    fn physical_pages<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let bytes = self.physical_pages_bytes(py)?;
        let arr = py.import("array")?.getattr("array")?.call1(("Q",))?;
        arr.call_method1("frombytes", (bytes,))?;
        Ok(arr)
    }

    #[getter]
    fn physical_page_count(&self) -> PyResult<u64> {
        Ok(self.get()?.physical().page_count())
    }

    // ---- pool analyses: JSON documents (the schema lives in poolscope-core's scan.rs) ----

    /// `session`: the session pool's tagging database (`!poolused 8`) instead of the global one.
    #[pyo3(signature = (sort="nonpaged", top=None, session=false))]
    fn poolused_json(
        &self,
        py: Python<'_>,
        sort: &str,
        top: Option<usize>,
        session: bool,
    ) -> PyResult<String> {
        let sort = match sort {
            "nonpaged" => SortBy::NonPagedBytes,
            "paged" => SortBy::PagedBytes,
            "allocs" => SortBy::Allocs,
            other => {
                return Err(PyValueError::new_err(format!(
                    "sort must be nonpaged, paged or allocs, not {other:?}"
                )))
            }
        };
        let d = self.get()?;
        let (rows, sources) = py
            .detach(|| {
                if session {
                    scan::poolused_session(&d, sort, top)
                } else {
                    scan::poolused(&d, sort, top)
                }
            })
            .map_err(|e| to_py(py, e))?;
        let rows: Vec<_> = rows.iter().map(scan::usage_json).collect();
        Ok(serde_json::json!({"rows": rows, "sources": sources}).to_string())
    }

    /// (summary JSON, columns) where columns maps pa/va/tag/size/previous_size/pool/allocated to
    /// little-endian bytes (u64, u64, u32, u32, u32, u8, u8), or None when blocks were not kept.
    #[pyo3(signature = (tags=None, blocks=false))]
    fn scan_pool_raw<'py>(
        &self,
        py: Python<'py>,
        tags: Option<Vec<String>>,
        blocks: bool,
    ) -> PyResult<(String, Option<Bound<'py, PyDict>>)> {
        let keep = match (tags, blocks) {
            (_, false) => Keep::None,
            (None, true) => Keep::All,
            (Some(ts), true) => Keep::Tags(parse_tags(&ts)?),
        };
        let d = self.get()?;
        let (result, layout) = py
            .detach(|| scan::pool_scan(&d, &keep))
            .map_err(|e| to_py(py, e))?;
        let summary = scan::pool_scan_json(&result, Some(&layout)).to_string();
        let cols = if blocks {
            Some(columns(py, &result.blocks)?)
        } else {
            None
        };
        Ok((summary, cols))
    }

    fn big_pool_json(&self, py: Python<'_>) -> PyResult<String> {
        let d = self.get()?;
        let b = py.detach(|| scan::big_pool(&d)).map_err(|e| to_py(py, e))?;
        Ok(scan::bigpool_json(&b).to_string())
    }

    fn memory_summary_json(&self, py: Python<'_>) -> PyResult<String> {
        let d = self.get()?;
        let m = scan::memory_summary(&d).map_err(|e| to_py(py, e))?;
        Ok(scan::memory_json(&m).to_string())
    }

    fn tag_owners_json(&self, py: Python<'_>, tags: Vec<String>) -> PyResult<String> {
        let tags = parse_tags(&tags)?;
        let d = self.get()?;
        let owners = py.detach(|| scan::tag_owners(&d, &tags));
        Ok(scan::owners_json(&owners).to_string())
    }

    /// Every analysis in one pass; the report document without its `dump` section.
    #[pyo3(signature = (top=None, owner_tags=5, dominant_share=0.5, bigpool_share=0.5))]
    fn analyze_json(
        &self,
        py: Python<'_>,
        top: Option<usize>,
        owner_tags: usize,
        dominant_share: f64,
        bigpool_share: f64,
    ) -> PyResult<String> {
        let opts = ScanOptions {
            top,
            owner_tags,
            thresholds: Thresholds {
                dominant_share,
                bigpool_share,
            },
            keep: Keep::None,
            ..ScanOptions::default()
        };
        let d = self.get()?;
        Ok(py.detach(|| scan::analyze(&d, &opts).to_json(&opts).to_string()))
    }

    /// Driver Verifier: statistics, drivers, tracked allocations, logs, sites and findings as
    /// one JSON document with every row; `driver` keeps one driver, `address` the log records
    /// holding it (and the IRP-log records of that IRP).
    #[pyo3(signature = (driver=None, address=None))]
    fn verifier_json(
        &self,
        py: Python<'_>,
        driver: Option<String>,
        address: Option<u64>,
    ) -> PyResult<String> {
        let d = self.get()?;
        py.detach(|| {
            scan::verifier(&d, driver.as_deref(), address)
                .map(|v| scan::verifier_report(&v, &d.modules, None).to_string())
        })
        .map_err(|e| to_py(py, e))
    }

    /// Driver Verifier read once: (summary JSON, columns). The summary is `verifier_json`'s
    /// document with at most `rows` tracked/log/IRP-log rows (all when None). Columns are
    /// read-only buffers of little-endian numbers, handed over without a copy (`memoryview(c)`
    /// is typed, `bytes(c)` the raw bytes): `tracked` {driver u32, va u64, bytes u64, tag u32,
    /// caller u64, pool u8}; `log` {va u64, bytes u64, thread u64, slot u32, depth u8, stack
    /// u64 x frames, frames}; `irp_log` {irp u64, thread u64, irql u8, kernel_apc_disable i16,
    /// special_apc_disable i16, slot u32, depth u8, stack u64 x frames, frames}; a log is None
    /// when it was not read. Stacks are row-major, `frames` per record, zero past `depth`.
    #[pyo3(signature = (driver=None, address=None, rows=Some(0)))]
    fn verifier_raw<'py>(
        &self,
        py: Python<'py>,
        driver: Option<String>,
        address: Option<u64>,
        rows: Option<usize>,
    ) -> PyResult<(String, Bound<'py, PyDict>)> {
        let d = self.get()?;
        let (summary, v) = py
            .detach(|| {
                scan::verifier(&d, driver.as_deref(), address).map(|v| {
                    let doc = scan::verifier_report(&v, &d.modules, rows).to_string();
                    (doc, v)
                })
            })
            .map_err(|e| to_py(py, e))?;
        let out = PyDict::new(py);
        let t = v.tracked;
        let tracked = PyDict::new(py);
        tracked.set_item("driver", Column::new(py, t.driver)?)?;
        tracked.set_item("va", Column::new(py, t.va)?)?;
        tracked.set_item("bytes", Column::new(py, t.bytes)?)?;
        tracked.set_item("tag", Column::new(py, t.tag)?)?;
        tracked.set_item("caller", Column::new(py, t.caller)?)?;
        tracked.set_item("pool", Column::new(py, t.pool)?)?;
        out.set_item("tracked", tracked)?;
        match v.log {
            Some(l) => {
                let cols = l.cols;
                let c = trace_columns(py, l.frames, l.slot, l.depth, l.stack)?;
                c.set_item("va", Column::new(py, cols.va)?)?;
                c.set_item("bytes", Column::new(py, cols.bytes)?)?;
                c.set_item("thread", Column::new(py, cols.thread)?)?;
                out.set_item("log", c)?;
            }
            None => out.set_item("log", py.None())?,
        }
        match v.irp_log {
            Some(l) => {
                let cols = l.cols;
                let c = trace_columns(py, l.frames, l.slot, l.depth, l.stack)?;
                c.set_item("irp", Column::new(py, cols.irp)?)?;
                c.set_item("thread", Column::new(py, cols.thread)?)?;
                c.set_item("irql", Column::new(py, cols.irql)?)?;
                c.set_item(
                    "kernel_apc_disable",
                    Column::new(py, cols.kernel_apc_disable)?,
                )?;
                c.set_item(
                    "special_apc_disable",
                    Column::new(py, cols.special_apc_disable)?,
                )?;
                out.set_item("irp_log", c)?;
            }
            None => out.set_item("irp_log", py.None())?,
        }
        Ok((summary, out))
    }

    fn __repr__(&self) -> String {
        match self.get() {
            Ok(d) => format!(
                "<poolscope.Dump {:?} {} build {}>",
                self.path,
                d.dump_type().name(),
                d.header().build()
            ),
            Err(_) => format!("<poolscope.Dump {:?} closed>", self.path),
        }
    }
}

fn parse_tags(tags: &[String]) -> PyResult<Vec<u32>> {
    tags.iter()
        .map(|t| {
            tag::parse(t)
                .map(tag::normalize)
                .ok_or_else(|| PyValueError::new_err(format!("not a pool tag: {t:?}")))
        })
        .collect()
}

/// A column as little-endian bytes.
fn le<T: Copy, const N: usize>(v: &[T], f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
    v.iter().flat_map(|&x| f(x)).collect()
}

/// A column of numbers owned by Rust, lent to Python without a copy through the buffer
/// protocol: read-only, one dimension, native byte order (little-endian on x64, the only
/// target). The vector is never changed after construction, so views stay valid while they
/// hold a reference to the column.
#[pyclass(frozen, module = "poolscope._native")]
struct Column {
    data: ColumnData,
    /// Element count, for `Py_buffer.shape`.
    len: isize,
}

enum ColumnData {
    U64(Vec<u64>),
    U32(Vec<u32>),
    I16(Vec<i16>),
    U8(Vec<u8>),
}

impl From<Vec<u64>> for ColumnData {
    fn from(v: Vec<u64>) -> Self {
        Self::U64(v)
    }
}
impl From<Vec<u32>> for ColumnData {
    fn from(v: Vec<u32>) -> Self {
        Self::U32(v)
    }
}
impl From<Vec<i16>> for ColumnData {
    fn from(v: Vec<i16>) -> Self {
        Self::I16(v)
    }
}
impl From<Vec<u8>> for ColumnData {
    fn from(v: Vec<u8>) -> Self {
        Self::U8(v)
    }
}

impl Column {
    fn new<T>(py: Python<'_>, v: Vec<T>) -> PyResult<Bound<'_, Column>>
    where
        Vec<T>: Into<ColumnData>,
    {
        let len = v.len() as isize;
        Bound::new(
            py,
            Column {
                data: v.into(),
                len,
            },
        )
    }

    /// (first byte, bytes per item, struct format).
    fn raw(&self) -> (*const u8, usize, &'static CStr) {
        match &self.data {
            ColumnData::U64(v) => (v.as_ptr().cast(), 8, c"Q"),
            ColumnData::U32(v) => (v.as_ptr().cast(), 4, c"I"),
            ColumnData::I16(v) => (v.as_ptr().cast(), 2, c"h"),
            ColumnData::U8(v) => (v.as_ptr(), 1, c"B"),
        }
    }
}

#[cfg(not(target_endian = "little"))]
compile_error!("verifier columns are lent as native-endian buffers documented as little-endian");

#[pymethods]
impl Column {
    fn __len__(&self) -> usize {
        self.len as usize
    }

    fn __repr__(&self) -> String {
        let (_, size, format) = self.raw();
        format!(
            "<poolscope Column {} x {} bytes ({})>",
            self.len,
            size,
            format.to_string_lossy()
        )
    }

    /// # Safety
    /// `view` comes from the interpreter's `PyObject_GetBuffer`; the filled view points into a
    /// vector that lives (unchanged: the class is frozen) as long as the reference stored in
    /// `view.obj`.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        if view.is_null() {
            return Err(PyBufferError::new_err("view is null"));
        }
        if (flags & ffi::PyBUF_WRITABLE) == ffi::PyBUF_WRITABLE {
            return Err(PyBufferError::new_err("verifier columns are read-only"));
        }
        let this = slf.get();
        let (buf, size, format) = this.raw();
        // Without PyBUF_FORMAT the consumer sees unsigned bytes (itemsize 1, as
        // PyBuffer_FillInfo gives; `array.frombytes` insists on it), else typed items.
        let typed = (flags & ffi::PyBUF_FORMAT) == ffi::PyBUF_FORMAT;
        let items = std::ptr::addr_of!(this.len).cast_mut();
        let bytes = this.len * size as isize;
        let owner = slf.clone().into_any().into_ptr();
        // SAFETY: `view` is a valid, writable Py_buffer (checked non-null above); every pointer
        // stored in it stays valid while `view.obj` (a new reference to this frozen object)
        // lives: the vector's buffer and `len` are never moved or changed, `format` is static,
        // and the other pointers point into the view itself.
        unsafe {
            (*view).obj = owner;
            (*view).buf = buf.cast_mut().cast();
            (*view).len = bytes;
            (*view).readonly = 1;
            (*view).itemsize = if typed { size as isize } else { 1 };
            (*view).format = if typed {
                format.as_ptr().cast_mut()
            } else {
                std::ptr::null_mut()
            };
            (*view).ndim = 1;
            (*view).shape = match ((flags & ffi::PyBUF_ND) == ffi::PyBUF_ND, typed) {
                (false, _) => std::ptr::null_mut(),
                (true, true) => items,
                (true, false) => &mut (*view).len,
            };
            (*view).strides = if (flags & ffi::PyBUF_STRIDES) == ffi::PyBUF_STRIDES {
                &mut (*view).itemsize
            } else {
                std::ptr::null_mut()
            };
            (*view).suboffsets = std::ptr::null_mut();
            (*view).internal = std::ptr::null_mut();
        }
        Ok(())
    }
}

/// The columns every log has: slot (u32), depth (u8), stack (u64 x frames), and `frames`.
fn trace_columns(
    py: Python<'_>,
    frames: usize,
    slot: Vec<u32>,
    depth: Vec<u8>,
    stack: Vec<u64>,
) -> PyResult<Bound<'_, PyDict>> {
    let c = PyDict::new(py);
    c.set_item("slot", Column::new(py, slot)?)?;
    c.set_item("depth", Column::new(py, depth)?)?;
    c.set_item("stack", Column::new(py, stack)?)?;
    c.set_item("frames", frames)?;
    Ok(c)
}

fn columns<'py>(py: Python<'py>, b: &Blocks) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("pa", PyBytes::new(py, &le(&b.pa, u64::to_le_bytes)))?;
    d.set_item("va", PyBytes::new(py, &le(&b.va, u64::to_le_bytes)))?;
    d.set_item("tag", PyBytes::new(py, &le(&b.tag, u32::to_le_bytes)))?;
    d.set_item("size", PyBytes::new(py, &le(&b.size, u32::to_le_bytes)))?;
    d.set_item(
        "previous_size",
        PyBytes::new(py, &le(&b.previous_size, u32::to_le_bytes)),
    )?;
    d.set_item("pool", PyBytes::new(py, &b.pool))?;
    let alloc: Vec<u8> = b.allocated.iter().map(|&a| u8::from(a)).collect();
    d.set_item("allocated", PyBytes::new(py, &alloc))?;
    Ok(d)
}

/// A tag (u32, first character in the low byte) as printed: four characters, '?' for
/// non-printable bytes, protected bit cleared.
#[pyfunction]
fn tag_name(tag: u32) -> String {
    tag::to_string(tag)
}

#[pyfunction]
fn bugcheck_name(code: u32) -> Option<String> {
    bugcheck::name(code)
}

/// Built-in profiles: {file name: JSON text}.
#[pyfunction]
fn builtin_profiles() -> Vec<(&'static str, &'static str)> {
    profile::BUILTIN.to_vec()
}

/// The built-in profile chosen for `build`: (profile name, why it was chosen).
#[pyfunction]
fn profile_for_build(py: Python<'_>, build: u32) -> PyResult<(String, String)> {
    let (p, why) = Profile::for_build(build).map_err(|e| to_py(py, e))?;
    Ok((p.name, why))
}

/// A PDB read as poolscope reads it (for checks and tests): {name, guid, age, id, publics,
/// data_symbols, globals {name: rva}, types {name: {size, fields {name: (offset, width, shift,
/// bits)}, members {name: (offset, type_name, count)}}}}.
#[pyfunction]
#[pyo3(signature = (data, file="(PDB)".to_string()))]
fn read_pdb(py: Python<'_>, data: &[u8], file: String) -> PyResult<Py<PyDict>> {
    let pdb = py
        .detach(|| poolscope_core::kernel::pdb::read(data, &file))
        .map_err(|e| to_py(py, e))?;
    let d = PyDict::new(py);
    d.set_item("name", &pdb.id.name)?;
    d.set_item("guid", pdb.id.guid())?;
    d.set_item("age", pdb.id.age)?;
    d.set_item("id", pdb.id.store_id())?;
    d.set_item("source", &pdb.symbols.source)?;
    d.set_item("publics", pdb.counts.0)?;
    d.set_item("data_symbols", pdb.counts.1)?;
    let globals = PyDict::new(py);
    for (k, v) in &pdb.symbols.globals {
        globals.set_item(k, v)?;
    }
    d.set_item("globals", globals)?;
    let types = PyDict::new(py);
    for (name, t) in &pdb.symbols.types {
        let td = PyDict::new(py);
        td.set_item("size", t.size)?;
        let fields = PyDict::new(py);
        for (f, at) in &t.fields {
            fields.set_item(f, at.parts())?;
        }
        let members = PyDict::new(py);
        for (m, mem) in &t.members {
            members.set_item(m, (mem.offset, mem.type_name.clone(), mem.count))?;
        }
        td.set_item("fields", fields)?;
        td.set_item("members", members)?;
        types.set_item(name, td)?;
    }
    d.set_item("types", types)?;
    Ok(d.unbind())
}

/// GUID, age and store id of a PDB, read from its info and DBI streams only: (name, guid, age,
/// id). What a symbol store lookup checks before it caches or uses a file.
#[pyfunction]
#[pyo3(signature = (data, file="(PDB)".to_string()))]
fn pdb_identity(
    py: Python<'_>,
    data: &[u8],
    file: String,
) -> PyResult<(String, String, u32, String)> {
    let id = py
        .detach(|| poolscope_core::kernel::pdb::identify(data, &file))
        .map_err(|e| to_py(py, e))?;
    Ok((id.name.clone(), id.guid(), id.age, id.store_id()))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("PoolscopeError", py.get_type::<PoolscopeError>())?;
    m.add("DumpFormatError", py.get_type::<DumpFormatError>())?;
    m.add(
        "UnsupportedDumpError",
        py.get_type::<UnsupportedDumpError>(),
    )?;
    m.add("MemoryNotPresent", py.get_type::<MemoryNotPresent>())?;
    m.add("LimitExceeded", py.get_type::<LimitExceeded>())?;
    m.add("SymbolsError", py.get_type::<SymbolsError>())?;
    let bases = pyo3::types::PyTuple::new(
        py,
        [
            py.get_type::<PoolscopeError>().into_any(),
            py.get_type::<PyOSError>().into_any(),
        ],
    )?;
    let ns = PyDict::new(py);
    ns.set_item("__module__", "poolscope")?;
    ns.set_item(
        "__doc__",
        "An operating-system error opening or reading a dump, or a path that is not a regular \
         file (FIFO, device, socket, directory); the message names the path (see .reason).",
    )?;
    let io_type = py
        .import("builtins")?
        .getattr("type")?
        .call1(("DumpIOError", bases, ns))?;
    m.add("DumpIOError", io_type)?;
    m.add_class::<Dump>()?;
    m.add_class::<Header>()?;
    m.add_class::<Bugcheck>()?;
    m.add_class::<Kdbg>()?;
    m.add_class::<Module>()?;
    m.add_class::<Translation>()?;
    m.add_class::<Column>()?;
    m.add_function(wrap_pyfunction!(bugcheck_name, m)?)?;
    m.add_function(wrap_pyfunction!(tag_name, m)?)?;
    m.add_function(wrap_pyfunction!(builtin_profiles, m)?)?;
    m.add_function(wrap_pyfunction!(profile_for_build, m)?)?;
    m.add_function(wrap_pyfunction!(read_pdb, m)?)?;
    m.add_function(wrap_pyfunction!(pdb_identity, m)?)?;
    Ok(())
}
