"""Generated gRPC stubs of ``proto/poolscope/v1/scan.proto`` (``python -m
poolscope.service.codegen``); do not edit ``scan_pb2*`` by hand."""
