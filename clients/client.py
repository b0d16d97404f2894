"""Client (blocking) and AsyncClient (asyncio) for the QARR router.

Retries (gRFC A6, AIP-194): a Generate call is committed once its first
message arrives. Before that, `Unavailable` and `ResourceExhausted` are retried
with exponential backoff (0.1 s doubling to 2 s, plus up to 0.1 s of jitter, at
least the server's retry pushback), at most `max_retries` times and never past
the call's deadline — unless the router says it already retried (a negative
`grpc-retry-pushback-ms`: NO_HEALTHY_TIER, TIERS_FULL, a tier that failed after
the router's own retries), so attempts never multiply. What the SDK retries is
what never reached a router or a router refused at admission (ROUTER_FULL). A
stream that delivered a message is never replayed: a failure after that is
raised to the caller as it is.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tenacity import AsyncRetrying, Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from clients._convert import build_request, to_chunk, to_completion, to_tier_list
from clients.errors import DeadlineExceeded, QarrError, from_rpc_error
from clients.types import Chunk, Completion, TierList
from qarr.v1 import router_service_pb2 as pb, router_service_pb2_grpc

DEFAULT_TARGET = "127.0.0.1:50051"
TARGET_ENV = "QARR_TARGET"  # the router address when none is passed
TOKEN_ENV = "QARR_TOKEN"  # the bearer token when none is passed
DEFAULT_TIMEOUT_S = 120.0
DEFAULT_MAX_RETRIES = 2
CHANNEL_OPTIONS = (
    # One retry layer: ours. gRPC's own transparent retries stay off.
    ("grpc.enable_retries", 0),
    # Reconnect about as fast as we retry, so a retry after "connection refused"
    # does not fail at once on a channel still waiting out a longer reconnect backoff.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
)


def _retryable(e: BaseException) -> bool:
    return isinstance(e, QarrError) and e.retryable


class _Settings:
    """What Client and AsyncClient share: credentials, metadata, deadline and retry policy."""

    def __init__(
        self,
        target: str | None,
        timeout: float | None,
        tls: bool,
        root_certificates: bytes | None,
        token: str | None,
        max_retries: int,
        private_key: bytes | None = None,
        certificate_chain: bytes | None = None,
    ) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if (private_key is None) != (certificate_chain is None):
            raise ValueError("private_key and certificate_chain go together (a client certificate for mutual TLS)")
        self.target = target or os.environ.get(TARGET_ENV) or DEFAULT_TARGET
        self.timeout = timeout
        self.max_retries = max_retries
        tls = tls or root_certificates is not None or certificate_chain is not None
        self._credentials = grpc.ssl_channel_credentials(root_certificates, private_key, certificate_chain) if tls else None
        token = token if token is not None else os.environ.get(TOKEN_ENV)
        self._metadata = (("authorization", f"Bearer {token.strip()}"),) if token and token.strip() else None

    def __repr__(self) -> str:  # never the token
        return f"{type(self).__name__}({self.target!r}, tls={self._credentials is not None}, token={'set' if self._metadata else 'none'})"

    def _deadline(self, timeout: float | None) -> float | None:
        timeout = self.timeout if timeout is None else timeout
        return None if timeout is None else time.monotonic() + timeout

    def _retry_policy(self, deadline: float | None) -> dict:
        def past_deadline(state) -> bool:
            return deadline is not None and time.monotonic() + (getattr(state, "upcoming_sleep", 0.0) or 0.0) >= deadline

        backoff = wait_exponential_jitter(initial=0.1, max=2.0, jitter=0.1)

        def wait(state) -> float:
            pushback = getattr(state.outcome.exception(), "retry_after_s", None) if state.outcome else None
            return max(backoff(state), pushback or 0.0)

        return dict(
            retry=retry_if_exception(_retryable),
            stop=stop_after_attempt(self.max_retries + 1) | past_deadline,
            wait=wait,
            reraise=True,
        )


def _remaining(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise DeadlineExceeded("the deadline passed before the call could start", code=grpc.StatusCode.DEADLINE_EXCEEDED)
    return left


class AsyncClient(_Settings):
    """`async with AsyncClient() as c: async for chunk in c.generate("Hi"): ...`

    `target` is the router's HOST:PORT (default: $QARR_TARGET, else 127.0.0.1:50051);
    `timeout` is the default deadline of each call in seconds (retries included);
    `tls` selects a TLS channel (system roots), `root_certificates` the PEM roots to trust instead;
    `private_key`/`certificate_chain` (PEM) are the client certificate for a router that requires one
    (mutual TLS); `token` is sent as `authorization: Bearer TOKEN` (default: $QARR_TOKEN).
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        tls: bool = False,
        root_certificates: bytes | None = None,
        token: str | None = None,
        max_retries: int = DEFAULT_MAX_RETRIES,
        private_key: bytes | None = None,
        certificate_chain: bytes | None = None,
    ) -> None:
        super().__init__(target, timeout, tls, root_certificates, token, max_retries, private_key, certificate_chain)
        self._channel = (
            grpc.aio.secure_channel(self.target, self._credentials, options=CHANNEL_OPTIONS)
            if self._credentials
            else grpc.aio.insecure_channel(self.target, options=CHANNEL_OPTIONS)
        )
        self._stub = router_service_pb2_grpc.RouterServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    def generate(
        self,
        prompt: str | None = None,
        *,
        messages: Sequence[Mapping[str, str]] | None = None,
        timeout: float | None = None,
        **options,
    ) -> AsyncIterator[Chunk]:
        """Stream chunks; the last one carries finish_reason, usage and tier.

        options: max_tokens, temperature, top_p, top_k, seed, stop, tier,
        latency_budget_ms, min_accuracy, request_id. Pass exactly one of
        `prompt` (sent as is) and `messages` (the tier applies the chat template).
        Leaving the loop early cancels the call once the iterator is closed
        (`contextlib.aclosing` closes it at once).
        """
        return self._stream(build_request(prompt, messages, **options), timeout)

    async def _open(self, request: pb.GenerateRequest, deadline: float | None):
        call = self._stub.Generate(request, timeout=_remaining(deadline), metadata=self._metadata)
        try:
            first = await call.read()
        except grpc.aio.AioRpcError as e:
            call.cancel()
            raise from_rpc_error(e) from None
        return call, first

    async def _stream(self, request: pb.GenerateRequest, timeout: float | None) -> AsyncIterator[Chunk]:
        deadline = self._deadline(timeout)
        call, msg = await AsyncRetrying(**self._retry_policy(deadline))(self._open, request, deadline)
        # Committed: from here on nothing is retried.
        try:
            while msg is not grpc.aio.EOF:
                yield to_chunk(msg)
                msg = await call.read()
        except grpc.aio.AioRpcError as e:
            raise from_rpc_error(e) from None
        finally:
            call.cancel()

    async def complete(self, prompt: str | None = None, **kwargs) -> Completion:
        """The whole answer at once (same arguments as `generate`)."""
        return to_completion([c async for c in self.generate(prompt, **kwargs)])

    async def tiers(self) -> TierList:
        """The router's tiers with health, breaker state, load and profile, as a list whose `.predictor` names
        the accuracy predictor in force ("" for none); retried like Generate."""
        deadline = self._deadline(None)

        async def list_tiers():
            try:
                return await self._stub.ListTiers(pb.ListTiersRequest(), timeout=_remaining(deadline), metadata=self._metadata)
            except grpc.aio.AioRpcError as e:
                raise from_rpc_error(e) from None

        resp = await AsyncRetrying(**self._retry_policy(deadline))(list_tiers)
        return to_tier_list(resp)

    async def health(self, service: str = "") -> str:
        """grpc.health.v1 status of the router: "SERVING", "NOT_SERVING", ... (not retried)."""
        try:
            resp = await self._health.Check(health_pb2.HealthCheckRequest(service=service), timeout=self.timeout)
        except grpc.aio.AioRpcError as e:
            raise from_rpc_error(e) from None
        return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)


class Client(_Settings):
    """Blocking twin of AsyncClient (same options): `with Client() as c: print(c.complete("Hi").text)`."""

    def __init__(
        self,
        target: str | None = None,
        *,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        tls: bool = False,
        root_certificates: bytes | None = None,
        token: str | None = None,
        max_retries: int = DEFAULT_MAX_RETRIES,
        private_key: bytes | None = None,
        certificate_chain: bytes | None = None,
    ) -> None:
        super().__init__(target, timeout, tls, root_certificates, token, max_retries, private_key, certificate_chain)
        self._channel = (
            grpc.secure_channel(self.target, self._credentials, options=CHANNEL_OPTIONS)
            if self._credentials
            else grpc.insecure_channel(self.target, options=CHANNEL_OPTIONS)
        )
        self._stub = router_service_pb2_grpc.RouterServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def generate(
        self,
        prompt: str | None = None,
        *,
        messages: Sequence[Mapping[str, str]] | None = None,
        timeout: float | None = None,
        **options,
    ) -> Iterator[Chunk]:
        """Stream chunks (see AsyncClient.generate). Leaving the loop early and
        closing the iterator cancels the call."""
        return self._stream(build_request(prompt, messages, **options), timeout)

    def _open(self, request: pb.GenerateRequest, deadline: float | None):
        call = self._stub.Generate(request, timeout=_remaining(deadline), metadata=self._metadata)
        try:
            first = next(call, None)
        except grpc.RpcError as e:
            call.cancel()
            raise from_rpc_error(e) from None
        return call, first

    def _stream(self, request: pb.GenerateRequest, timeout: float | None) -> Iterator[Chunk]:
        deadline = self._deadline(timeout)
        call, msg = Retrying(**self._retry_policy(deadline))(self._open, request, deadline)
        # Committed: from here on nothing is retried.
        try:
            while msg is not None:
                yield to_chunk(msg)
                msg = next(call, None)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None
        finally:
            call.cancel()

    def complete(self, prompt: str | None = None, **kwargs) -> Completion:
        """The whole answer at once (same arguments as `generate`)."""
        return to_completion(list(self.generate(prompt, **kwargs)))

    def tiers(self) -> TierList:
        """The router's tiers with health, breaker state, load and profile, as a list whose `.predictor` names
        the accuracy predictor in force ("" for none); retried like Generate."""
        deadline = self._deadline(None)

        def list_tiers():
            try:
                return self._stub.ListTiers(pb.ListTiersRequest(), timeout=_remaining(deadline), metadata=self._metadata)
            except grpc.RpcError as e:
                raise from_rpc_error(e) from None

        resp = Retrying(**self._retry_policy(deadline))(list_tiers)
        return to_tier_list(resp)

    def health(self, service: str = "") -> str:
        """grpc.health.v1 status of the router: "SERVING", "NOT_SERVING", ... (not retried)."""
        try:
            resp = self._health.Check(health_pb2.HealthCheckRequest(service=service), timeout=self.timeout)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None
        return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
