import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]

class JobSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_SOURCE_UNSPECIFIED: _ClassVar[JobSource]
    JOB_SOURCE_UPLOAD: _ClassVar[JobSource]
    JOB_SOURCE_PATH: _ClassVar[JobSource]

class Compression(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COMPRESSION_UNSPECIFIED: _ClassVar[Compression]
    COMPRESSION_NONE: _ClassVar[Compression]
    COMPRESSION_ZSTD: _ClassVar[Compression]

class ReportView(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REPORT_VIEW_UNSPECIFIED: _ClassVar[ReportView]
    REPORT_VIEW_JSON: _ClassVar[ReportView]
    REPORT_VIEW_TYPED: _ClassVar[ReportView]
    REPORT_VIEW_FULL: _ClassVar[ReportView]
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState
JOB_SOURCE_UNSPECIFIED: JobSource
JOB_SOURCE_UPLOAD: JobSource
JOB_SOURCE_PATH: JobSource
COMPRESSION_UNSPECIFIED: Compression
COMPRESSION_NONE: Compression
COMPRESSION_ZSTD: Compression
REPORT_VIEW_UNSPECIFIED: ReportView
REPORT_VIEW_JSON: ReportView
REPORT_VIEW_TYPED: ReportView
REPORT_VIEW_FULL: ReportView

class Job(_message.Message):
    __slots__ = ("id", "state", "source", "file_name", "host_id", "labels", "sha256", "size_bytes", "priority", "create_time", "start_time", "finish_time", "progress_percent", "stage", "error", "attempts", "submissions", "timeout_seconds", "queue_position", "dump_time")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    FINISH_TIME_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_PERCENT_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    SUBMISSIONS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_POSITION_FIELD_NUMBER: _ClassVar[int]
    DUMP_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    state: JobState
    source: JobSource
    file_name: str
    host_id: str
    labels: _containers.ScalarMap[str, str]
    sha256: str
    size_bytes: int
    priority: int
    create_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    finish_time: _timestamp_pb2.Timestamp
    progress_percent: float
    stage: str
    error: str
    attempts: int
    submissions: int
    timeout_seconds: float
    queue_position: int
    dump_time: str
    def __init__(self, id: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., source: _Optional[_Union[JobSource, str]] = ..., file_name: _Optional[str] = ..., host_id: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ..., priority: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., progress_percent: _Optional[float] = ..., stage: _Optional[str] = ..., error: _Optional[str] = ..., attempts: _Optional[int] = ..., submissions: _Optional[int] = ..., timeout_seconds: _Optional[float] = ..., queue_position: _Optional[int] = ..., dump_time: _Optional[str] = ...) -> None: ...

class DumpMetadata(_message.Message):
    __slots__ = ("file_name", "host_id", "labels", "compression", "expected_sha256", "priority", "timeout_seconds", "size_bytes")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_SHA256_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    file_name: str
    host_id: str
    labels: _containers.ScalarMap[str, str]
    compression: Compression
    expected_sha256: str
    priority: int
    timeout_seconds: float
    size_bytes: int
    def __init__(self, file_name: _Optional[str] = ..., host_id: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., compression: _Optional[_Union[Compression, str]] = ..., expected_sha256: _Optional[str] = ..., priority: _Optional[int] = ..., timeout_seconds: _Optional[float] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class UploadDumpRequest(_message.Message):
    __slots__ = ("metadata", "chunk")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    metadata: DumpMetadata
    chunk: bytes
    def __init__(self, metadata: _Optional[_Union[DumpMetadata, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class UploadDumpResponse(_message.Message):
    __slots__ = ("job", "deduplicated", "received_bytes")
    JOB_FIELD_NUMBER: _ClassVar[int]
    DEDUPLICATED_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_BYTES_FIELD_NUMBER: _ClassVar[int]
    job: Job
    deduplicated: bool
    received_bytes: int
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., deduplicated: _Optional[bool] = ..., received_bytes: _Optional[int] = ...) -> None: ...

class SubmitPathRequest(_message.Message):
    __slots__ = ("path", "host_id", "labels", "priority", "timeout_seconds")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PATH_FIELD_NUMBER: _ClassVar[int]
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    path: str
    host_id: str
    labels: _containers.ScalarMap[str, str]
    priority: int
    timeout_seconds: float
    def __init__(self, path: _Optional[str] = ..., host_id: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., priority: _Optional[int] = ..., timeout_seconds: _Optional[float] = ...) -> None: ...

class SubmitPathResponse(_message.Message):
    __slots__ = ("job", "deduplicated")
    JOB_FIELD_NUMBER: _ClassVar[int]
    DEDUPLICATED_FIELD_NUMBER: _ClassVar[int]
    job: Job
    deduplicated: bool
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., deduplicated: _Optional[bool] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("states", "host_id", "labels", "created_after", "created_before", "page_size", "page_token")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    STATES_FIELD_NUMBER: _ClassVar[int]
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AFTER_FIELD_NUMBER: _ClassVar[int]
    CREATED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    states: _containers.RepeatedScalarFieldContainer[JobState]
    host_id: str
    labels: _containers.ScalarMap[str, str]
    created_after: _timestamp_pb2.Timestamp
    created_before: _timestamp_pb2.Timestamp
    page_size: int
    page_token: str
    def __init__(self, states: _Optional[_Iterable[_Union[JobState, str]]] = ..., host_id: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., created_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token", "total_size")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    next_page_token: str
    total_size: int
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_size: _Optional[int] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class JobEvent(_message.Message):
    __slots__ = ("kind", "job")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[JobEvent.Kind]
        KIND_SNAPSHOT: _ClassVar[JobEvent.Kind]
        KIND_STATE_CHANGED: _ClassVar[JobEvent.Kind]
        KIND_PROGRESS: _ClassVar[JobEvent.Kind]
    KIND_UNSPECIFIED: JobEvent.Kind
    KIND_SNAPSHOT: JobEvent.Kind
    KIND_STATE_CHANGED: JobEvent.Kind
    KIND_PROGRESS: JobEvent.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    kind: JobEvent.Kind
    job: Job
    def __init__(self, kind: _Optional[_Union[JobEvent.Kind, str]] = ..., job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class GetReportRequest(_message.Message):
    __slots__ = ("job_id", "view")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    view: ReportView
    def __init__(self, job_id: _Optional[str] = ..., view: _Optional[_Union[ReportView, str]] = ...) -> None: ...

class GetReportResponse(_message.Message):
    __slots__ = ("job", "report_json", "report")
    JOB_FIELD_NUMBER: _ClassVar[int]
    REPORT_JSON_FIELD_NUMBER: _ClassVar[int]
    REPORT_FIELD_NUMBER: _ClassVar[int]
    job: Job
    report_json: str
    report: Report
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., report_json: _Optional[str] = ..., report: _Optional[_Union[Report, _Mapping]] = ...) -> None: ...

class Report(_message.Message):
    __slots__ = ("dump", "memory", "poolused", "pool_scan", "bigpool", "tag_owners", "findings", "sources", "unavailable", "verifier")
    class SourcesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class UnavailableEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    DUMP_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    POOLUSED_FIELD_NUMBER: _ClassVar[int]
    POOL_SCAN_FIELD_NUMBER: _ClassVar[int]
    BIGPOOL_FIELD_NUMBER: _ClassVar[int]
    TAG_OWNERS_FIELD_NUMBER: _ClassVar[int]
    FINDINGS_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    UNAVAILABLE_FIELD_NUMBER: _ClassVar[int]
    VERIFIER_FIELD_NUMBER: _ClassVar[int]
    dump: DumpInfo
    memory: MemorySummary
    poolused: _containers.RepeatedCompositeFieldContainer[PoolUsage]
    pool_scan: PoolScan
    bigpool: _containers.RepeatedCompositeFieldContainer[BigPoolEntry]
    tag_owners: _containers.RepeatedCompositeFieldContainer[TagOwners]
    findings: _containers.RepeatedCompositeFieldContainer[Finding]
    sources: _containers.ScalarMap[str, str]
    unavailable: _containers.ScalarMap[str, str]
    verifier: VerifierSummary
    def __init__(self, dump: _Optional[_Union[DumpInfo, _Mapping]] = ..., memory: _Optional[_Union[MemorySummary, _Mapping]] = ..., poolused: _Optional[_Iterable[_Union[PoolUsage, _Mapping]]] = ..., pool_scan: _Optional[_Union[PoolScan, _Mapping]] = ..., bigpool: _Optional[_Iterable[_Union[BigPoolEntry, _Mapping]]] = ..., tag_owners: _Optional[_Iterable[_Union[TagOwners, _Mapping]]] = ..., findings: _Optional[_Iterable[_Union[Finding, _Mapping]]] = ..., sources: _Optional[_Mapping[str, str]] = ..., unavailable: _Optional[_Mapping[str, str]] = ..., verifier: _Optional[_Union[VerifierSummary, _Mapping]] = ...) -> None: ...

class Bugcheck(_message.Message):
    __slots__ = ("code", "name", "params", "meanings")
    CODE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    MEANINGS_FIELD_NUMBER: _ClassVar[int]
    code: str
    name: str
    params: _containers.RepeatedScalarFieldContainer[str]
    meanings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, code: _Optional[str] = ..., name: _Optional[str] = ..., params: _Optional[_Iterable[str]] = ..., meanings: _Optional[_Iterable[str]] = ...) -> None: ...

class DumpInfo(_message.Message):
    __slots__ = ("path", "dump_type", "build", "machine", "processors", "bugcheck", "system_time", "uptime_s", "file_size", "physical_pages", "kernel_base", "modules", "nt_build_lab", "profile", "decompressed")
    PATH_FIELD_NUMBER: _ClassVar[int]
    DUMP_TYPE_FIELD_NUMBER: _ClassVar[int]
    BUILD_FIELD_NUMBER: _ClassVar[int]
    MACHINE_FIELD_NUMBER: _ClassVar[int]
    PROCESSORS_FIELD_NUMBER: _ClassVar[int]
    BUGCHECK_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_TIME_FIELD_NUMBER: _ClassVar[int]
    UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    FILE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PHYSICAL_PAGES_FIELD_NUMBER: _ClassVar[int]
    KERNEL_BASE_FIELD_NUMBER: _ClassVar[int]
    MODULES_FIELD_NUMBER: _ClassVar[int]
    NT_BUILD_LAB_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    DECOMPRESSED_FIELD_NUMBER: _ClassVar[int]
    path: str
    dump_type: str
    build: int
    machine: str
    processors: int
    bugcheck: Bugcheck
    system_time: str
    uptime_s: float
    file_size: int
    physical_pages: int
    kernel_base: str
    modules: int
    nt_build_lab: str
    profile: str
    decompressed: bool
    def __init__(self, path: _Optional[str] = ..., dump_type: _Optional[str] = ..., build: _Optional[int] = ..., machine: _Optional[str] = ..., processors: _Optional[int] = ..., bugcheck: _Optional[_Union[Bugcheck, _Mapping]] = ..., system_time: _Optional[str] = ..., uptime_s: _Optional[float] = ..., file_size: _Optional[int] = ..., physical_pages: _Optional[int] = ..., kernel_base: _Optional[str] = ..., modules: _Optional[int] = ..., nt_build_lab: _Optional[str] = ..., profile: _Optional[str] = ..., decompressed: _Optional[bool] = ...) -> None: ...

class MemorySummary(_message.Message):
    __slots__ = ("physical_pages", "available_pages", "resident_available_pages", "commit_pages", "commit_limit_pages", "peak_commit_pages", "nonpaged_pool_pages", "nonpaged_pool_max_pages", "paged_pool_pages", "paged_pool_max_pages", "excessive_nonpaged", "excessive_paged", "rule")
    PHYSICAL_PAGES_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_PAGES_FIELD_NUMBER: _ClassVar[int]
    RESIDENT_AVAILABLE_PAGES_FIELD_NUMBER: _ClassVar[int]
    COMMIT_PAGES_FIELD_NUMBER: _ClassVar[int]
    COMMIT_LIMIT_PAGES_FIELD_NUMBER: _ClassVar[int]
    PEAK_COMMIT_PAGES_FIELD_NUMBER: _ClassVar[int]
    NONPAGED_POOL_PAGES_FIELD_NUMBER: _ClassVar[int]
    NONPAGED_POOL_MAX_PAGES_FIELD_NUMBER: _ClassVar[int]
    PAGED_POOL_PAGES_FIELD_NUMBER: _ClassVar[int]
    PAGED_POOL_MAX_PAGES_FIELD_NUMBER: _ClassVar[int]
    EXCESSIVE_NONPAGED_FIELD_NUMBER: _ClassVar[int]
    EXCESSIVE_PAGED_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    physical_pages: int
    available_pages: int
    resident_available_pages: int
    commit_pages: int
    commit_limit_pages: int
    peak_commit_pages: int
    nonpaged_pool_pages: int
    nonpaged_pool_max_pages: int
    paged_pool_pages: int
    paged_pool_max_pages: int
    excessive_nonpaged: bool
    excessive_paged: bool
    rule: str
    def __init__(self, physical_pages: _Optional[int] = ..., available_pages: _Optional[int] = ..., resident_available_pages: _Optional[int] = ..., commit_pages: _Optional[int] = ..., commit_limit_pages: _Optional[int] = ..., peak_commit_pages: _Optional[int] = ..., nonpaged_pool_pages: _Optional[int] = ..., nonpaged_pool_max_pages: _Optional[int] = ..., paged_pool_pages: _Optional[int] = ..., paged_pool_max_pages: _Optional[int] = ..., excessive_nonpaged: _Optional[bool] = ..., excessive_paged: _Optional[bool] = ..., rule: _Optional[str] = ...) -> None: ...

class PoolUsage(_message.Message):
    __slots__ = ("tag", "description", "nonpaged_allocs", "nonpaged_frees", "nonpaged_in_use", "nonpaged_bytes", "paged_allocs", "paged_frees", "paged_in_use", "paged_bytes")
    TAG_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    NONPAGED_ALLOCS_FIELD_NUMBER: _ClassVar[int]
    NONPAGED_FREES_FIELD_NUMBER: _ClassVar[int]
    NONPAGED_IN_USE_FIELD_NUMBER: _ClassVar[int]
    NONPAGED_BYTES_FIELD_NUMBER: _ClassVar[int]
    PAGED_ALLOCS_FIELD_NUMBER: _ClassVar[int]
    PAGED_FREES_FIELD_NUMBER: _ClassVar[int]
    PAGED_IN_USE_FIELD_NUMBER: _ClassVar[int]
    PAGED_BYTES_FIELD_NUMBER: _ClassVar[int]
    tag: str
    description: str
    nonpaged_allocs: int
    nonpaged_frees: int
    nonpaged_in_use: int
    nonpaged_bytes: int
    paged_allocs: int
    paged_frees: int
    paged_in_use: int
    paged_bytes: int
    def __init__(self, tag: _Optional[str] = ..., description: _Optional[str] = ..., nonpaged_allocs: _Optional[int] = ..., nonpaged_frees: _Optional[int] = ..., nonpaged_in_use: _Optional[int] = ..., nonpaged_bytes: _Optional[int] = ..., paged_allocs: _Optional[int] = ..., paged_frees: _Optional[int] = ..., paged_in_use: _Optional[int] = ..., paged_bytes: _Optional[int] = ...) -> None: ...

class PoolScanTag(_message.Message):
    __slots__ = ("tag", "pool", "allocated", "allocated_bytes", "free", "free_bytes")
    TAG_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    ALLOCATED_FIELD_NUMBER: _ClassVar[int]
    ALLOCATED_BYTES_FIELD_NUMBER: _ClassVar[int]
    FREE_FIELD_NUMBER: _ClassVar[int]
    FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    tag: str
    pool: str
    allocated: int
    allocated_bytes: int
    free: int
    free_bytes: int
    def __init__(self, tag: _Optional[str] = ..., pool: _Optional[str] = ..., allocated: _Optional[int] = ..., allocated_bytes: _Optional[int] = ..., free: _Optional[int] = ..., free_bytes: _Optional[int] = ...) -> None: ...

class PoolScan(_message.Message):
    __slots__ = ("layouts", "pages_scanned", "pool_pages", "rejected_pages", "tags")
    LAYOUTS_FIELD_NUMBER: _ClassVar[int]
    PAGES_SCANNED_FIELD_NUMBER: _ClassVar[int]
    POOL_PAGES_FIELD_NUMBER: _ClassVar[int]
    REJECTED_PAGES_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    layouts: _containers.RepeatedScalarFieldContainer[str]
    pages_scanned: int
    pool_pages: int
    rejected_pages: int
    tags: _containers.RepeatedCompositeFieldContainer[PoolScanTag]
    def __init__(self, layouts: _Optional[_Iterable[str]] = ..., pages_scanned: _Optional[int] = ..., pool_pages: _Optional[int] = ..., rejected_pages: _Optional[int] = ..., tags: _Optional[_Iterable[_Union[PoolScanTag, _Mapping]]] = ...) -> None: ...

class BigPoolEntry(_message.Message):
    __slots__ = ("va", "tag", "bytes", "pool", "free")
    VA_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    FREE_FIELD_NUMBER: _ClassVar[int]
    va: str
    tag: str
    bytes: int
    pool: str
    free: bool
    def __init__(self, va: _Optional[str] = ..., tag: _Optional[str] = ..., bytes: _Optional[int] = ..., pool: _Optional[str] = ..., free: _Optional[bool] = ...) -> None: ...

class TagOwner(_message.Message):
    __slots__ = ("module", "base", "offsets")
    MODULE_FIELD_NUMBER: _ClassVar[int]
    BASE_FIELD_NUMBER: _ClassVar[int]
    OFFSETS_FIELD_NUMBER: _ClassVar[int]
    module: str
    base: str
    offsets: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, module: _Optional[str] = ..., base: _Optional[str] = ..., offsets: _Optional[_Iterable[str]] = ...) -> None: ...

class TagOwners(_message.Message):
    __slots__ = ("tag", "modules")
    TAG_FIELD_NUMBER: _ClassVar[int]
    MODULES_FIELD_NUMBER: _ClassVar[int]
    tag: str
    modules: _containers.RepeatedCompositeFieldContainer[TagOwner]
    def __init__(self, tag: _Optional[str] = ..., modules: _Optional[_Iterable[_Union[TagOwner, _Mapping]]] = ...) -> None: ...

class Finding(_message.Message):
    __slots__ = ("kind", "severity", "summary", "evidence_json")
    KIND_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_JSON_FIELD_NUMBER: _ClassVar[int]
    kind: str
    severity: str
    summary: str
    evidence_json: str
    def __init__(self, kind: _Optional[str] = ..., severity: _Optional[str] = ..., summary: _Optional[str] = ..., evidence_json: _Optional[str] = ...) -> None: ...

class VerifierDriver(_message.Message):
    __slots__ = ("name", "base", "size", "state", "loads", "unloads", "current_nonpaged_allocs", "current_nonpaged_bytes", "current_paged_allocs", "current_paged_bytes", "peak_nonpaged_allocs", "peak_nonpaged_bytes", "peak_paged_allocs", "peak_paged_bytes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BASE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LOADS_FIELD_NUMBER: _ClassVar[int]
    UNLOADS_FIELD_NUMBER: _ClassVar[int]
    CURRENT_NONPAGED_ALLOCS_FIELD_NUMBER: _ClassVar[int]
    CURRENT_NONPAGED_BYTES_FIELD_NUMBER: _ClassVar[int]
    CURRENT_PAGED_ALLOCS_FIELD_NUMBER: _ClassVar[int]
    CURRENT_PAGED_BYTES_FIELD_NUMBER: _ClassVar[int]
    PEAK_NONPAGED_ALLOCS_FIELD_NUMBER: _ClassVar[int]
    PEAK_NONPAGED_BYTES_FIELD_NUMBER: _ClassVar[int]
    PEAK_PAGED_ALLOCS_FIELD_NUMBER: _ClassVar[int]
    PEAK_PAGED_BYTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    base: str
    size: int
    state: str
    loads: int
    unloads: int
    current_nonpaged_allocs: int
    current_nonpaged_bytes: int
    current_paged_allocs: int
    current_paged_bytes: int
    peak_nonpaged_allocs: int
    peak_nonpaged_bytes: int
    peak_paged_allocs: int
    peak_paged_bytes: int
    def __init__(self, name: _Optional[str] = ..., base: _Optional[str] = ..., size: _Optional[int] = ..., state: _Optional[str] = ..., loads: _Optional[int] = ..., unloads: _Optional[int] = ..., current_nonpaged_allocs: _Optional[int] = ..., current_nonpaged_bytes: _Optional[int] = ..., current_paged_allocs: _Optional[int] = ..., current_paged_bytes: _Optional[int] = ..., peak_nonpaged_allocs: _Optional[int] = ..., peak_nonpaged_bytes: _Optional[int] = ..., peak_paged_allocs: _Optional[int] = ..., peak_paged_bytes: _Optional[int] = ...) -> None: ...

class VerifierSummary(_message.Message):
    __slots__ = ("status", "enabled", "level", "options", "drivers", "tracked_total", "log_total", "irp_log_total")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    DRIVERS_FIELD_NUMBER: _ClassVar[int]
    TRACKED_TOTAL_FIELD_NUMBER: _ClassVar[int]
    LOG_TOTAL_FIELD_NUMBER: _ClassVar[int]
    IRP_LOG_TOTAL_FIELD_NUMBER: _ClassVar[int]
    status: str
    enabled: bool
    level: int
    options: _containers.RepeatedScalarFieldContainer[str]
    drivers: _containers.RepeatedCompositeFieldContainer[VerifierDriver]
    tracked_total: int
    log_total: int
    irp_log_total: int
    def __init__(self, status: _Optional[str] = ..., enabled: _Optional[bool] = ..., level: _Optional[int] = ..., options: _Optional[_Iterable[str]] = ..., drivers: _Optional[_Iterable[_Union[VerifierDriver, _Mapping]]] = ..., tracked_total: _Optional[int] = ..., log_total: _Optional[int] = ..., irp_log_total: _Optional[int] = ...) -> None: ...

class AggregateRequest(_message.Message):
    __slots__ = ("host_id", "labels", "created_after", "created_before", "top", "min_growth_bytes")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AFTER_FIELD_NUMBER: _ClassVar[int]
    CREATED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    TOP_FIELD_NUMBER: _ClassVar[int]
    MIN_GROWTH_BYTES_FIELD_NUMBER: _ClassVar[int]
    host_id: str
    labels: _containers.ScalarMap[str, str]
    created_after: _timestamp_pb2.Timestamp
    created_before: _timestamp_pb2.Timestamp
    top: int
    min_growth_bytes: int
    def __init__(self, host_id: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., created_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., top: _Optional[int] = ..., min_growth_bytes: _Optional[int] = ...) -> None: ...

class TagTotal(_message.Message):
    __slots__ = ("tag", "bytes", "nonpaged_bytes", "paged_bytes", "dumps", "max_bytes")
    TAG_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    NONPAGED_BYTES_FIELD_NUMBER: _ClassVar[int]
    PAGED_BYTES_FIELD_NUMBER: _ClassVar[int]
    DUMPS_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    tag: str
    bytes: int
    nonpaged_bytes: int
    paged_bytes: int
    dumps: int
    max_bytes: int
    def __init__(self, tag: _Optional[str] = ..., bytes: _Optional[int] = ..., nonpaged_bytes: _Optional[int] = ..., paged_bytes: _Optional[int] = ..., dumps: _Optional[int] = ..., max_bytes: _Optional[int] = ...) -> None: ...

class DriverTotal(_message.Message):
    __slots__ = ("driver", "dumps", "bytes", "tags", "reasons")
    DRIVER_FIELD_NUMBER: _ClassVar[int]
    DUMPS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    driver: str
    dumps: int
    bytes: int
    tags: _containers.RepeatedScalarFieldContainer[str]
    reasons: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, driver: _Optional[str] = ..., dumps: _Optional[int] = ..., bytes: _Optional[int] = ..., tags: _Optional[_Iterable[str]] = ..., reasons: _Optional[_Iterable[str]] = ...) -> None: ...

class BugcheckCount(_message.Message):
    __slots__ = ("code", "name", "count")
    CODE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    code: str
    name: str
    count: int
    def __init__(self, code: _Optional[str] = ..., name: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class TrendPoint(_message.Message):
    __slots__ = ("job_id", "dump_time", "bytes")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    DUMP_TIME_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    dump_time: str
    bytes: int
    def __init__(self, job_id: _Optional[str] = ..., dump_time: _Optional[str] = ..., bytes: _Optional[int] = ...) -> None: ...

class HostTrend(_message.Message):
    __slots__ = ("host_id", "tag", "dumps", "first_bytes", "last_bytes", "growth_bytes", "points")
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    DUMPS_FIELD_NUMBER: _ClassVar[int]
    FIRST_BYTES_FIELD_NUMBER: _ClassVar[int]
    LAST_BYTES_FIELD_NUMBER: _ClassVar[int]
    GROWTH_BYTES_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    host_id: str
    tag: str
    dumps: int
    first_bytes: int
    last_bytes: int
    growth_bytes: int
    points: _containers.RepeatedCompositeFieldContainer[TrendPoint]
    def __init__(self, host_id: _Optional[str] = ..., tag: _Optional[str] = ..., dumps: _Optional[int] = ..., first_bytes: _Optional[int] = ..., last_bytes: _Optional[int] = ..., growth_bytes: _Optional[int] = ..., points: _Optional[_Iterable[_Union[TrendPoint, _Mapping]]] = ...) -> None: ...

class AggregateResponse(_message.Message):
    __slots__ = ("job_count", "host_count", "top_tags", "top_drivers", "bugchecks", "trends")
    JOB_COUNT_FIELD_NUMBER: _ClassVar[int]
    HOST_COUNT_FIELD_NUMBER: _ClassVar[int]
    TOP_TAGS_FIELD_NUMBER: _ClassVar[int]
    TOP_DRIVERS_FIELD_NUMBER: _ClassVar[int]
    BUGCHECKS_FIELD_NUMBER: _ClassVar[int]
    TRENDS_FIELD_NUMBER: _ClassVar[int]
    job_count: int
    host_count: int
    top_tags: _containers.RepeatedCompositeFieldContainer[TagTotal]
    top_drivers: _containers.RepeatedCompositeFieldContainer[DriverTotal]
    bugchecks: _containers.RepeatedCompositeFieldContainer[BugcheckCount]
    trends: _containers.RepeatedCompositeFieldContainer[HostTrend]
    def __init__(self, job_count: _Optional[int] = ..., host_count: _Optional[int] = ..., top_tags: _Optional[_Iterable[_Union[TagTotal, _Mapping]]] = ..., top_drivers: _Optional[_Iterable[_Union[DriverTotal, _Mapping]]] = ..., bugchecks: _Optional[_Iterable[_Union[BugcheckCount, _Mapping]]] = ..., trends: _Optional[_Iterable[_Union[HostTrend, _Mapping]]] = ...) -> None: ...
