"""The poolscope scan service: a gRPC API over ``poolscope.scan`` with job scheduling,
persistence (SQLite), aggregation across dumps, batch scanning of archives and scale-out on Dask.

Modules: ``store`` (SQLite: jobs, reports, digests, spool), ``jobs`` (scheduler: bounded
priority queue, workers, timeouts, cancellation), ``executors`` (scan subprocesses locally or on
Dask), ``scanproc`` (the scan child process), ``aggregate`` (digests and fleet aggregation),
``server`` (gRPC servicer, auth, TLS, limits), ``client`` (the client side), ``batch``
(archives), ``cli`` (``serve``, ``submit``, ``jobs``, ``report``, ``aggregate``, ``batch``),
``codegen`` (stub generation), ``v1`` (generated stubs).
"""
