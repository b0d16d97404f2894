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


PUSHBACK_KEY = "grpc-retry-pushback-ms"  # gRFC A6: a negative value tells the client not to retry


def status_metadata(
    code: grpc.StatusCode, message: str, reason: str, *, retry_after_s: float | None = None, retry: bool = True, **info: str
) -> tuple[tuple[str, bytes | str], ...]:
    """Trailing metadata for an error: google.rpc.Status with ErrorInfo (and RetryInfo when
    `retry_after_s` is given); `retry=False` adds a negative retry pushback (the server already retried)."""
    details = [any_pb2.Any()]
    details[0].Pack(error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=info))
    metadata: list[tuple[str, bytes | str]] = []
    if retry_after_s is not None and retry:
        delay = error_details_pb2.RetryInfo()
        delay.retry_delay.FromMilliseconds(int(retry_after_s * 1000))
        details.append(any_pb2.Any())
        details[-1].Pack(delay)
        metadata.append((PUSHBACK_KEY, str(int(retry_after_s * 1000))))
    elif not retry:
        metadata.append((PUSHBACK_KEY, "-1"))
    status = status_pb2.Status(code=code.value[0], message=message, details=details)
    return ((DETAILS_KEY, status.SerializeToString()), *metadata)


async def abort(
    context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str, reason: str, *,
    retry_after_s: float | None = None, retry: bool = True, **info: str,
):
    """End the call with `code`; never returns."""
    trailers = status_metadata(code, message, reason, retry_after_s=retry_after_s, retry=retry, **info)
    await context.abort(code, message, trailing_metadata=trailers)


def retry_pushback_ms(trailing_metadata) -> int | None:
    """The server's retry pushback in ms (negative: do not retry), or None when it sent none."""
    for key, value in trailing_metadata or ():
        if key == PUSHBACK_KEY:
            try:
                return int(value)
            except (TypeError, ValueError):
                return -1
    return None


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
