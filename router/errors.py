"""The router's domain errors: why a request was not (fully) served, in words no transport owns.

Each transport adapter translates them in one table (gRPC: router/grpc_service.py;
HTTP: the OpenAI door). Every error carries an ErrorInfo-style `reason`
(UPPER_SNAKE_CASE) and whether the router already spent its own retries on it
(`retried`): callers must not retry those, or attempts multiply. `code` is the
canonical status (google.rpc.Code name) that metrics and logs use on every transport.

    RouteError
    ├── InvalidRequest        the caller must change the request (bad field, prompt too long)
    │   └── UnknownTier       a pinned tier name the router does not know
    ├── Overloaded            admission refused it; retrying later may succeed
    │   ├── CallerBusy        this caller already has its limit of streams open (max_in_flight_per_caller)
    │   └── TiersBusy         every tier that could serve it is at its stream limit
    ├── NoTierAvailable       no tier that could serve it is healthy now
    ├── UpstreamFailed        the tier(s) failed before the first message, after the router's retries
    ├── StreamInterrupted     the tier failed after text was delivered (never retried)
    └── DeadlineExceeded      the caller's deadline passed
"""

from __future__ import annotations


class RouteError(Exception):
    """Base of every error the router core raises."""

    code = "INTERNAL"
    reason = "ROUTER_ERROR"
    retried = False  # True: the router already tried every candidate it could; do not retry

    def __init__(self, message: str, reason: str | None = None, **info: str) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.info = info  # ErrorInfo metadata: short, bounded strings only


class InvalidRequest(RouteError):
    code = "INVALID_ARGUMENT"
    reason = "INVALID_REQUEST"


class UnknownTier(InvalidRequest):
    reason = "UNKNOWN_TIER"


class Overloaded(RouteError):
    """Refused at admission: retry after `retry_after_s`."""

    code = "RESOURCE_EXHAUSTED"
    reason = "ROUTER_FULL"

    def __init__(self, message: str, reason: str | None = None, retry_after_s: float = 0.1, **info: str) -> None:
        super().__init__(message, reason, **info)
        self.retry_after_s = retry_after_s


class CallerBusy(Overloaded):
    """The caller (its token) already holds max_in_flight_per_caller streams: others keep their share."""

    reason = "CALLER_FULL"

    def __init__(self, message: str, reason: str | None = None, retry_after_s: float = 0.5, **info: str) -> None:
        super().__init__(message, reason, retry_after_s, **info)


class TiersBusy(Overloaded):
    reason = "TIERS_FULL"
    retried = True


class NoTierAvailable(RouteError):
    code = "UNAVAILABLE"
    reason = "NO_HEALTHY_TIER"
    retried = True


class UpstreamFailed(RouteError):
    """The tier's own status (`code`: UNAVAILABLE, INTERNAL...) after the router's retries."""

    reason = "UPSTREAM_ERROR"
    retried = True

    def __init__(self, message: str, status: str, reason: str | None = None, **info: str) -> None:
        super().__init__(message, reason or None, **info)
        self.code = status


class StreamInterrupted(UpstreamFailed):
    """Text was delivered, then the tier failed; `delivered` tokens reached the caller."""

    def __init__(self, message: str, status: str, delivered: int, reason: str | None = None, **info: str) -> None:
        super().__init__(message, status, reason, **info)
        self.delivered = delivered


class DeadlineExceeded(RouteError):
    code = "DEADLINE_EXCEEDED"
    reason = "DEADLINE_EXCEEDED"
    retried = True


def clip(text: str, limit: int = 64) -> str:
    """Caller text quoted back in an error, repr-style: at most `limit` + 3 characters, escapes included (64
    astral characters quote as 640), so an error never echoes a huge input."""
    quoted = repr(text[:limit])
    if len(text) <= limit and len(quoted) <= limit + 2:
        return quoted
    return quoted[: limit + 2] + "..."
