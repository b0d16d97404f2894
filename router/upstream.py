"""Open a tier stream and read its first message, retrying on another replica, then the next candidate tier.

This is the router's only retry layer (gRPC's channel retries are off). It
follows gRFC A6: a stream is committed once its first message arrives, so only
opening it and reading that message is retried, on UNAVAILABLE or
RESOURCE_EXHAUSTED, with exponential backoff and jitter, within the caller's
deadline and the retry budget. Each attempt takes, for the first candidate tier
that still has one, the replica the picker (router/pick.py) chooses among those
this request has not tried whose breaker and stream limit let it through: other
replicas of the same tier first, then the next tier. What cannot be opened ends
as a domain error (router/errors.py) carrying the last tier's status and reason.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass

import grpc
from tenacity import AsyncRetrying, retry_if_exception, wait_exponential_jitter

from router.backends import Backend, Tier
from router.breaker import State
from mesh.config import RetryConfig
from mesh.status import reason_of
from router.choose import Candidate
from router.errors import DeadlineExceeded, InvalidRequest, RouteError, TiersBusy, UpstreamFailed
from router.retry_budget import RetryBudget

RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})
# Outcomes that count against a tier. Client errors (INVALID_ARGUMENT, CANCELLED,
# DEADLINE_EXCEEDED from the caller's own deadline...) never do.
TIER_FAULTS = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS})
# A tier's answer that blames the request: passed on to the caller as such.
CALLER_FAULTS = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND})
# Do not start an attempt with less time than this left before the caller's deadline.
MIN_ATTEMPT_S = 0.005


@dataclass(slots=True)
class Upstream:
    """An open tier stream whose first message has arrived."""

    backend: Backend  # the replica
    candidate: Candidate
    call: grpc.aio.UnaryStreamCall
    chunks: AsyncIterator[bytes]
    first: bytes
    attempts: int
    probe: bool
    began: float  # perf_counter when the attempt that answered began
    first_at: float  # perf_counter when its first message arrived
    pick: str  # why this replica (router/pick.py)

    def settle(self, code: grpc.StatusCode | None) -> None:
        """Give the stream's outcome to the breaker (None: it ended without a verdict) and free its slot."""
        self.backend.in_flight -= 1
        settle(self.backend, self.probe, code)


def settle(backend: Backend, probe: bool, code: grpc.StatusCode | None) -> None:
    if code is grpc.StatusCode.OK:
        backend.breaker.record_success()
    elif code in TIER_FAULTS:
        backend.breaker.record_failure()
    else:
        backend.breaker.release(probe)


def _retryable(e: BaseException) -> bool:
    return isinstance(e, grpc.aio.AioRpcError) and e.code() in RETRYABLE


async def open_upstream(
    raw: bytes,
    candidates: Sequence[Candidate],
    tiers: Mapping[str, Tier],
    budget: RetryBudget,
    config: RetryConfig,
    time_remaining: Callable[[], float | None],
    on_attempt: Callable[[str, str], object] = lambda tier, reason: None,
    key: int | None = None,
    seed: int = 0,
) -> Upstream:
    """The first replica that answers; raises a RouteError for the last failure, or TiersBusy when none could be tried.

    `key`: the request's prefix key for replica affinity (None: none); `seed`: breaks the picker's ties.
    `on_attempt(tier, reason)` is told of each attempt and returns the gRPC metadata to send (trace context) or None.
    """
    queue = deque(candidates)
    tried: set[str] = set()  # replica addresses this request tried
    attempts = 0

    def next_target():
        """(candidate, replica, pick) for the next attempt, or None when no candidate has a replica left."""
        while queue:
            tier = tiers.get(queue[0].name)
            picked = tier.pick(key, seed, tried) if tier is not None else None
            if picked is not None:
                return queue[0], *picked
            queue.popleft()
        return None

    async def attempt() -> Upstream:
        nonlocal attempts
        target = next_target()
        if target is None:
            raise TiersBusy("every candidate tier is busy or its breaker is open")
        candidate, backend, picked = target
        tried.add(backend.address)
        probe = backend.breaker.state is State.HALF_OPEN
        backend.breaker.acquire()
        backend.in_flight += 1
        attempts += 1
        began = time.perf_counter()
        call = backend.generate(raw, timeout=time_remaining(), metadata=on_attempt(candidate.name, candidate.reason))
        chunks = aiter(call)
        try:
            first = await anext(chunks)
        except BaseException as e:  # CancelledError included: clean up, then re-raise
            call.cancel()
            backend.in_flight -= 1
            if isinstance(e, StopAsyncIteration):
                settle(backend, probe, grpc.StatusCode.INTERNAL)
                raise UpstreamFailed(f"tier {backend.name} ended the stream with no message", "INTERNAL", tier=backend.name) from None
            settle(backend, probe, e.code() if isinstance(e, grpc.aio.AioRpcError) else None)
            raise
        return Upstream(backend, candidate, call, chunks, first, attempts, probe, began, time.perf_counter(), picked.reason)

    def stop(state) -> bool:
        if next_target() is None:
            return True
        remaining = time_remaining()
        if remaining is not None and remaining <= state.upcoming_sleep + MIN_ATTEMPT_S:
            return True
        return not budget.try_spend()

    # The happy path (first tier answers) skips tenacity's per-call machinery (~0.1 ms a request).
    try:
        return await attempt()
    except grpc.aio.AioRpcError as e:
        if not _retryable(e):
            raise upstream_error(e) from None
        first_failure = e

    replayed = False

    async def attempt_after_first() -> Upstream:
        # Tenacity sees the first attempt's failure first, so its stop check, retry budget and
        # backoff run exactly as if it had made that attempt itself.
        nonlocal replayed
        if not replayed:
            replayed = True
            raise first_failure
        return await attempt()

    retrying = AsyncRetrying(
        retry=retry_if_exception(_retryable),
        stop=stop,
        wait=wait_exponential_jitter(initial=config.backoff_initial_s, max=config.backoff_max_s, jitter=config.backoff_initial_s),
        reraise=True,
    )
    try:
        return await retrying(attempt_after_first)
    except grpc.aio.AioRpcError as e:
        raise upstream_error(e) from None


def upstream_error(e: grpc.aio.AioRpcError) -> RouteError:
    """A tier's failure before its first message, as the router's domain error."""
    code = e.code()
    reason = reason_of(e.trailing_metadata())
    details = (e.details() or code.name)[:512]
    if code in CALLER_FAULTS:
        return InvalidRequest(details, reason or "INVALID_REQUEST")
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded("the deadline passed before a tier answered")
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        return TiersBusy(f"every tier that could serve this is busy ({details})")
    return UpstreamFailed(details, code.name, reason or "UPSTREAM_ERROR")
