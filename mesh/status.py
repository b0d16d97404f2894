"""Rich gRPC errors (google.rpc.Status with an ErrorInfo reason, AIP-193 style).

Every server in the mesh aborts through `abort`, so a caller always gets a
canonical code, a short message and a machine-readable reason.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

DOMAIN = "qarr.dev"
DETAILS_KEY = "grpc-status-details-bin"


def status_metadata(code: grpc.StatusCode, message: str, reason: str, **info: str) -> tuple[tuple[str, bytes], ...]:
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=info))
    status = status_pb2.Status(code=code.value[0], message=message, details=[detail])
    return ((DETAILS_KEY, status.SerializeToString()),)


async def abort(context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str, reason: str, **info: str):
    """End the call with `code`; never returns."""
    await context.abort(code, message, trailing_metadata=status_metadata(code, message, reason, **info))


def reason_of(trailing_metadata) -> str:
    """The ErrorInfo reason carried in a call's trailing metadata, or ''."""
    for key, value in trailing_metadata or ():
        if key == DETAILS_KEY:
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return info.reason
    return ""
