"""Client (blocking) and AsyncClient (asyncio) for the QARR router."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients._convert import build_request, to_chunk, to_completion, to_tier
from clients.errors import from_rpc_error
from clients.types import Chunk, Completion, Tier
from qarr.v1 import router_service_pb2 as pb, router_service_pb2_grpc

DEFAULT_TARGET = "127.0.0.1:50051"
CHANNEL_OPTIONS = (("grpc.enable_retries", 0),)


def _credentials(tls: bool, root_certificates: bytes | None):
    return grpc.ssl_channel_credentials(root_certificates) if tls else None


def _metadata(token: str | None):
    return (("authorization", f"Bearer {token}"),) if token else None


class AsyncClient:
    """`async with AsyncClient() as c: async for chunk in c.generate("Hi"): ...`"""

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout: float | None = 120.0,
        tls: bool = False,
        root_certificates: bytes | None = None,
        token: str | None = None,
    ) -> None:
        creds = _credentials(tls, root_certificates)
        self._channel = (
            grpc.aio.secure_channel(target, creds, options=CHANNEL_OPTIONS)
            if creds
            else grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
        )
        self._stub = router_service_pb2_grpc.RouterServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self.timeout = timeout
        self._metadata = _metadata(token)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def generate(self, prompt: str | None = None, *, messages=None, timeout: float | None = None, **options) -> AsyncIterator[Chunk]:
        """Stream chunks; options: max_tokens, temperature, top_p, top_k, seed, stop, tier,
        latency_budget_ms, min_accuracy, request_id."""
        request = build_request(prompt, messages, **options)
        call = self._stub.Generate(request, timeout=timeout or self.timeout, metadata=self._metadata)
        try:
            async for msg in call:
                yield to_chunk(msg)
        except grpc.aio.AioRpcError as e:
            raise from_rpc_error(e) from None
        finally:
            call.cancel()

    async def complete(self, prompt: str | None = None, **kwargs) -> Completion:
        return to_completion([c async for c in self.generate(prompt, **kwargs)])

    async def tiers(self) -> list[Tier]:
        try:
            resp = await self._stub.ListTiers(pb.ListTiersRequest(), timeout=self.timeout, metadata=self._metadata)
        except grpc.aio.AioRpcError as e:
            raise from_rpc_error(e) from None
        return [to_tier(t) for t in resp.tiers]

    async def health(self, service: str = "") -> str:
        try:
            resp = await self._health.Check(health_pb2.HealthCheckRequest(service=service), timeout=self.timeout)
        except grpc.aio.AioRpcError as e:
            raise from_rpc_error(e) from None
        return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)


class Client:
    """Blocking twin of AsyncClient: `with Client() as c: print(c.complete("Hi").text)`."""

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout: float | None = 120.0,
        tls: bool = False,
        root_certificates: bytes | None = None,
        token: str | None = None,
    ) -> None:
        creds = _credentials(tls, root_certificates)
        self._channel = (
            grpc.secure_channel(target, creds, options=CHANNEL_OPTIONS)
            if creds
            else grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
        )
        self._stub = router_service_pb2_grpc.RouterServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self.timeout = timeout
        self._metadata = _metadata(token)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def generate(self, prompt: str | None = None, *, messages=None, timeout: float | None = None, **options) -> Iterator[Chunk]:
        request = build_request(prompt, messages, **options)
        call = self._stub.Generate(request, timeout=timeout or self.timeout, metadata=self._metadata)
        try:
            for msg in call:
                yield to_chunk(msg)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None
        finally:
            call.cancel()

    def complete(self, prompt: str | None = None, **kwargs) -> Completion:
        return to_completion(list(self.generate(prompt, **kwargs)))

    def tiers(self) -> list[Tier]:
        try:
            resp = self._stub.ListTiers(pb.ListTiersRequest(), timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None
        return [to_tier(t) for t in resp.tiers]

    def health(self, service: str = "") -> str:
        try:
            resp = self._health.Check(health_pb2.HealthCheckRequest(service=service), timeout=self.timeout)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None
        return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
