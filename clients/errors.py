"""One exception tree for the SDK; gRPC statuses are mapped to it in `from_rpc_error` only."""

from __future__ import annotations

import grpc

from mesh.status import reason_of, retry_pushback_ms


class QarrError(Exception):
    """Base of every error the SDK raises."""

    code: grpc.StatusCode | None = None
    # Whether calling again may help: UNAVAILABLE / RESOURCE_EXHAUSTED, unless the server said it
    # already retried (a negative grpc-retry-pushback-ms). `retry_after_s`: the server's suggested wait.
    retryable: bool = False
    retry_after_s: float | None = None

    def __init__(
        self, message: str, *, reason: str = "", code: grpc.StatusCode | None = None,
        retryable: bool | None = None, retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        if code is not None:
            self.code = code
        if retryable is not None:
            self.retryable = retryable
        self.retry_after_s = retry_after_s


class InvalidRequest(QarrError):
    """The request cannot be served as asked (INVALID_ARGUMENT, NOT_FOUND, OUT_OF_RANGE...)."""


class Unavailable(QarrError):
    """The mesh or every fitting tier is down (UNAVAILABLE); safe to retry if no text arrived."""

    retryable = True


class ResourceExhausted(QarrError):
    """The router or tier is at its admission limit (RESOURCE_EXHAUSTED)."""

    retryable = True


class DeadlineExceeded(QarrError):
    """The deadline passed before the answer was complete (DEADLINE_EXCEEDED)."""


class Cancelled(QarrError):
    """The call was cancelled (CANCELLED)."""


class Unauthenticated(QarrError):
    """Credentials missing or wrong (UNAUTHENTICATED, PERMISSION_DENIED)."""


class ServerError(QarrError):
    """The server failed (INTERNAL, UNKNOWN, DATA_LOSS, UNIMPLEMENTED)."""


_BY_CODE: dict[grpc.StatusCode, type[QarrError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequest,
    grpc.StatusCode.NOT_FOUND: InvalidRequest,
    grpc.StatusCode.OUT_OF_RANGE: InvalidRequest,
    grpc.StatusCode.FAILED_PRECONDITION: InvalidRequest,
    grpc.StatusCode.ALREADY_EXISTS: InvalidRequest,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: Unauthenticated,
}


def from_rpc_error(e: grpc.RpcError) -> QarrError:
    code = e.code()
    cls = _BY_CODE.get(code, ServerError)
    trailers = e.trailing_metadata()
    pushback = retry_pushback_ms(trailers)
    return cls(
        e.details() or code.name, reason=reason_of(trailers), code=code,
        retryable=cls.retryable and (pushback is None or pushback >= 0),
        retry_after_s=pushback / 1000 if pushback is not None and pushback >= 0 else None,
    )
