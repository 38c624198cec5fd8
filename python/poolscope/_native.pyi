"""Type stubs for the Rust extension (rust/python/src/lib.rs)."""

from array import array
from os import PathLike
from typing import Any, Self

class PoolscopeError(Exception):
    reason: str
    offset: int | None
    address: int | None
    address_space: str | None

class DumpFormatError(PoolscopeError): ...
class UnsupportedDumpError(PoolscopeError): ...
class MemoryNotPresent(PoolscopeError): ...
class LimitExceeded(PoolscopeError): ...
class SymbolsError(PoolscopeError): ...
class DumpIOError(PoolscopeError, OSError): ...

class Bugcheck:
    code: int
    name: str | None
    params: list[int]
    meanings: list[str]

class Header:
    major_version: int
    minor_version: int
    build: int
    directory_table_base: int
    pfn_database: int
    ps_loaded_module_list: int
    ps_active_process_head: int
    machine_image_type: int
    number_processors: int
    bugcheck: Bugcheck
    kd_debugger_data_block: int
    runs: list[tuple[int, int]]
    number_of_pages: int
    dump_type: int
    required_dump_space: int
    system_time: int
    system_time_unix: float | None
    system_up_time: int
    uptime_s: float
    comment: str
    mini_dump_fields: int
    secondary_data_state: int
    product_type: int
    suite_mask: int
    writer_status: int
    kd_secondary_version: int
    attributes: int
    boot_id: int
    context_rip: int
    context_rsp: int
    exception_code: int
    exception_address: int

class Kdbg:
    va: int | None
    source: str
    size: int
    encoded: bool
    fields: dict[str, int]
    values: dict[str, int]
    strings: dict[str, str]
    keys: tuple[int, int, int] | None
    notes: list[str]
    kern_base: int | None
    nt_build_lab: str | None
    located_by: str
    """"header_pointer", "kd_copy_data_block", "image_owner_tag_scan" or
    "physical_owner_tag_scan"."""
    header_pointer: int
    header_pointer_problem: str | None
    nt_image: tuple[int, int, str] | None
    """(base, size, how it was found)."""
    kd_copy_data_block: int | None
    description: str

class Module:
    name: str
    path: str
    base: int
    size: int
    entry: int

class Translation:
    va: int
    pa: int
    page_size: int
    transition: bool

class Column:
    """A column of the Driver Verifier read, owned by Rust and lent through the buffer protocol:
    read-only, one dimension, little-endian; ``memoryview(col)`` is typed (Q, I, h or B)."""

    def __len__(self) -> int: ...
    def __buffer__(self, flags: int, /) -> memoryview: ...

class Dump:
    path: str
    def __init__(
        self,
        path: str | PathLike[str],
        *,
        max_decompressed: int | None = None,
        spool_dir: str | PathLike[str] | None = None,
        profile_json: str | None = None,
        symbols_json: str | None = None,
        symbols_origin: str | None = None,
    ) -> None: ...
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *args: Any) -> bool: ...
    @property
    def header(self) -> Header: ...
    @property
    def dump_type(self) -> str: ...
    @property
    def file_size(self) -> int: ...
    @property
    def decompressed(self) -> bool: ...
    @property
    def truncated(self) -> tuple[int, int, int, int] | None: ...
    @property
    def notes(self) -> list[str]: ...
    @property
    def profile_name(self) -> str: ...
    @property
    def kdbg(self) -> Kdbg | None: ...
    @property
    def kernel_base(self) -> int | None: ...
    @property
    def codeview(self) -> tuple[str, str, int, str, str] | None:
        """nt's RSDS record: (PDB name, GUID, age, store id GUIDAGE, how it was found)."""
    @property
    def codeview_problem(self) -> str | None: ...
    @property
    def symbols_source(self) -> str | None: ...
    def use_pdb(self, data: bytes, file: str) -> None: ...
    def modules(self) -> list[Module]: ...
    def symbolize(self, addr: int) -> str | None: ...
    def read_physical(self, pa: int, n: int) -> bytes: ...
    def read_virtual(self, va: int, n: int) -> bytes: ...
    def translate(self, va: int) -> Translation: ...
    def physical_runs(self) -> list[tuple[int, int]]: ...
    def physical_pages_bytes(self) -> bytes: ...
    def physical_pages(self) -> array[int]: ...
    @property
    def physical_page_count(self) -> int: ...
    def poolused_json(
        self, sort: str = "nonpaged", top: int | None = None, session: bool = False
    ) -> str: ...
    def scan_pool_raw(
        self, tags: list[str] | None = None, blocks: bool = False
    ) -> tuple[str, dict[str, bytes] | None]: ...
    def big_pool_json(self) -> str: ...
    def memory_summary_json(self) -> str: ...
    def tag_owners_json(self, tags: list[str]) -> str: ...
    def analyze_json(
        self,
        top: int | None = None,
        owner_tags: int = 5,
        dominant_share: float = 0.5,
        bigpool_share: float = 0.5,
    ) -> str: ...
    def verifier_json(self, driver: str | None = None, address: int | None = None) -> str: ...
    def verifier_raw(
        self, driver: str | None = None, address: int | None = None, rows: int | None = 0
    ) -> tuple[str, dict[str, dict[str, Column | int] | None]]: ...

def bugcheck_name(code: int) -> str | None: ...
def tag_name(tag: int) -> str: ...
def builtin_profiles() -> list[tuple[str, str]]: ...
def profile_for_build(build: int) -> tuple[str, str]: ...
def read_pdb(data: bytes, file: str = ...) -> dict[str, Any]: ...
def pdb_identity(data: bytes, file: str = ...) -> tuple[str, str, int, str]: ...
