"""The HTTP door's one error table: a refusal becomes an HTTP status and OpenAI's error body.

    {"error": {"message": ..., "type": ..., "param": ..., "code": ...}}

Domain errors (router/errors.py) map by their canonical code; the door's own
refusals (bad JSON, unknown model, bad token, body too large) are HttpErrors
made here. `code` is the ErrorInfo reason in lower case ("no_healthy_tier"),
OpenAI's "model_not_found" for an unknown model. Whether to retry rides along
as the openai SDKs read it: `retry-after` / `retry-after-ms` on an admission
refusal the router did not retry, `x-should-retry: false` on what the router
already retried (one retry layer per hop, like gRPC's negative retry pushback).
"""

from __future__ import annotations

import math

from router.errors import Overloaded, RouteError, UnknownTier
from router.http.protocol import dumps, error_body

# Canonical code (google.rpc.Code name) -> HTTP status, as in google.rpc's own mapping.
STATUS = {
    "INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403, "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409, "ABORTED": 409, "RESOURCE_EXHAUSTED": 429, "CANCELLED": 499,
    "UNIMPLEMENTED": 501, "UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504,
}
# HTTP status -> OpenAI's error type.
TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
         404: "invalid_request_error", 405: "invalid_request_error", 413: "invalid_request_error",
         429: "rate_limit_error"}


class HttpError(Exception):
    """A response the door sends instead of a completion."""

    def __init__(self, status: int, message: str, code: str | None, param: str | None = None,
                 headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = headers

    @property
    def type(self) -> str:
        return TYPES.get(self.status, "server_error")

    def body(self) -> bytes:
        return dumps(error_body(self.type, self.message, self.code, self.param))

    def event(self) -> bytes:
        """The error as an SSE event, for a stream whose headers were already sent (the SDKs raise on it)."""
        return b"data: " + self.body() + b"\n\n"


def http_error(e: RouteError) -> HttpError:
    """The one translation of a domain error."""
    if isinstance(e, UnknownTier):
        return HttpError(404, e.message, "model_not_found", "model", _retry_headers(e))
    return HttpError(STATUS.get(e.code, 500), e.message, e.reason.lower(), None, _retry_headers(e))


def _retry_headers(e: RouteError) -> tuple[tuple[bytes, bytes], ...]:
    if e.retried:
        return ((b"x-should-retry", b"false"),)
    if isinstance(e, Overloaded):
        return (
            (b"retry-after", str(max(1, math.ceil(e.retry_after_s))).encode()),
            (b"retry-after-ms", str(max(1, round(e.retry_after_s * 1000))).encode()),
            (b"x-should-retry", b"true"),
        )
    return ()


def bad_request(message: str, param: str | None = None) -> HttpError:
    return HttpError(400, message, "invalid_request", param)


def unknown_model(model: str, known: list[str]) -> HttpError:
    shown = model if len(model) <= 64 else model[:64] + "..."
    return HttpError(404, f"The model `{shown}` does not exist; models here: {', '.join(known)}", "model_not_found", "model")


def deadline_passed() -> HttpError:
    return HttpError(504, "the request's deadline passed (x-qarr-timeout-ms or the door's request_timeout_s)",
                     "deadline_exceeded", None, ((b"x-should-retry", b"false"),))


def unauthenticated() -> HttpError:
    return HttpError(401, "missing or invalid bearer token (Authorization: Bearer <token>)", "invalid_api_key", None,
                     ((b"www-authenticate", b"Bearer"),))
