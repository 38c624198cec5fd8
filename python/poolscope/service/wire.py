"""The hot path of ``UploadDump`` on the wire, kept byte-compatible with the proto.

An ``UploadDumpRequest`` holding only a chunk is the bytes ``0x12 <varint length> <data>``
(field 2, length-delimited). Parsing it through protobuf copies every chunk twice and halves
the upload rate, so the server reads that exact form itself (a zero-copy ``memoryview`` of the
received bytes) and hands anything else to protobuf; the client writes chunks in that form.
Any conforming client works: messages in another valid encoding take the protobuf path.
"""

from __future__ import annotations

from typing import Any

import grpc

from poolscope.service.v1 import scan_pb2 as pb

SERVICE = "poolscope.v1.ScanService"
UPLOAD_METHOD = f"/{SERVICE}/UploadDump"
_CHUNK_TAG = 0x12  # field 2 (chunk), wire type 2 (length-delimited)


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def encode_chunk(data: bytes | bytearray | memoryview) -> bytes:
    """The serialized ``UploadDumpRequest(chunk=data)``."""
    return b"".join((bytes((_CHUNK_TAG,)), varint(len(data)), data))


def decode_upload_request(raw: bytes) -> pb.UploadDumpRequest | memoryview:
    """A chunk-only message → a memoryview of its data; anything else → the message."""
    if len(raw) >= 2 and raw[0] == _CHUNK_TAG:
        n, shift, pos = 0, 0, 1
        while pos < len(raw) and pos <= 10:
            b = raw[pos]
            n |= (b & 0x7F) << shift
            pos += 1
            if not b & 0x80:
                if pos + n == len(raw):
                    return memoryview(raw)[pos:]
                break
            shift += 7
    return pb.UploadDumpRequest.FromString(raw)


def serialize_upload_request(msg: Any) -> bytes:
    return msg if isinstance(msg, bytes) else msg.SerializeToString()


def add_servicer(servicer: Any, server: grpc.Server) -> None:
    """Register a ScanService servicer as the generated ``add_ScanServiceServicer_to_server``
    does, but with the fast chunk decoder for ``UploadDump``."""
    service = pb.DESCRIPTOR.services_by_name["ScanService"]
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for m in service.methods:
        request_cls = getattr(pb, m.input_type.name)
        response_cls = getattr(pb, m.output_type.name)
        kw = {
            "request_deserializer": decode_upload_request
            if m.name == "UploadDump"
            else request_cls.FromString,
            "response_serializer": response_cls.SerializeToString,
        }
        behavior = getattr(servicer, m.name)
        if m.client_streaming and m.server_streaming:
            handlers[m.name] = grpc.stream_stream_rpc_method_handler(behavior, **kw)
        elif m.client_streaming:
            handlers[m.name] = grpc.stream_unary_rpc_method_handler(behavior, **kw)
        elif m.server_streaming:
            handlers[m.name] = grpc.unary_stream_rpc_method_handler(behavior, **kw)
        else:
            handlers[m.name] = grpc.unary_unary_rpc_method_handler(behavior, **kw)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)
