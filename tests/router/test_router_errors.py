"""Every domain error of the router core reaches a gRPC caller with its status, reason and retry advice,
and is logged exactly once (one table: router/grpc_service.py)."""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from mesh.observability import FIELDS_ATTR
from mesh.server import MeshServer
from mesh.status import DETAILS_KEY, abort, reason_of, retry_pushback_ms
from qarr.v1 import common_pb2, router_service_pb2 as pb, tier_service_pb2
from router import errors
from router.grpc_service import grpc_status
from tests.router.routing_helpers import FakeTier, Router, request, tier_entry


INVALID, EXHAUSTED = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED


class ScriptedTier:
    """A TierService that ends every Generate with the status set in `code`, before any message."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.code = grpc.StatusCode.INTERNAL
        self.mesh = MeshServer([tier_service_pb2.DESCRIPTOR.services_by_name["TierService"].full_name])
        self.mesh.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "qarr.v1.TierService", {"Generate": grpc.unary_stream_rpc_method_handler(self.generate)}),))
        self.port = 0

    async def generate(self, raw: bytes, context):
        await abort(context, self.code, f"scripted {self.code.name}", f"SCRIPTED_{self.code.name}")
        yield b""

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> ScriptedTier:
        self.port = await self.mesh.start("127.0.0.1:0")
        await self.mesh.set_health(True)
        return self

    async def stop(self) -> None:
        await self.mesh.server.stop(0)


class RequestLog(logging.Handler):
    """The router's per-request log lines (their fields), as they are emitted."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(getattr(record, FIELDS_ATTR))


@pytest.fixture
def request_log():
    logger = logging.getLogger("qarr.router.requests")
    handler, level = RequestLog(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


def all_errors(cls=errors.RouteError) -> set[type]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub} | all_errors(sub)
    return found


def retry_info(e: grpc.aio.AioRpcError) -> float | None:
    for key, value in e.trailing_metadata() or ():
        if key == DETAILS_KEY:
            for detail in status_pb2.Status.FromString(value).details:
                info = error_details_pb2.RetryInfo()
                if detail.Unpack(info):
                    return info.retry_delay.ToMilliseconds() / 1000
    return None


async def call(router: Router, req: pb.GenerateRequest | bytes, timeout: float = 10.0, metadata=None):
    """(messages, AioRpcError) of one Generate call that must fail."""
    method = router.channel.unary_stream("/qarr.v1.RouterService/Generate")
    raw = req if isinstance(req, bytes) else req.SerializeToString()
    got = []
    with pytest.raises(grpc.aio.AioRpcError) as e:
        async for msg in method(raw, timeout=timeout, metadata=metadata):
            got.append(pb.GenerateResponse.FromString(msg))
    return got, e.value


@pytest.fixture
async def mesh(tmp_path, started):
    """Tiers a, b (fake engines, 20 ms a token, at most 2 and 4 streams), a scripted tier s, a router taking 6 streams."""
    a = await started(FakeTier("a", token_delay_s=0.02))
    b = await started(FakeTier("b", token_delay_s=0.02))
    s = await started(ScriptedTier("s"))
    tiers = [tier_entry(a, max_in_flight=2), tier_entry(b, max_in_flight=4),
             {"name": "s", "address": s.address, "max_model_len": 2048}]
    router = await started(Router(tmp_path, tiers, {}, max_in_flight=6, limits={"max_prompt_bytes": 1000}))
    await router.wait_serving("a", "b", "s")
    return router, a, b, s


async def test_every_domain_error_has_its_status_reason_retry_advice_and_one_log_line(mesh, request_log, started, tmp_path):
    """Each RouteError subclass, provoked for real, ends the call with its table status, its ErrorInfo reason,
    the right retry advice (RetryInfo, or a negative pushback when the router already retried), and one log line."""
    router, a, b, s = mesh
    seen: set[type] = set()

    async def expect(cls, code: grpc.StatusCode, reason: str, req, *, retry: str, via=None, metadata=None):
        before = len(request_log.lines)
        messages, e = await call(via or router, req, metadata=metadata)
        assert e.code() == code == grpc_status(_example(cls, code)), (cls, e.code(), e.details())
        assert reason_of(e.trailing_metadata()) == reason, (cls, e.details())
        pushback = retry_pushback_ms(e.trailing_metadata())
        if retry == "after":
            assert retry_info(e) and pushback and pushback > 0, cls
        elif retry == "never":
            assert pushback == -1 and retry_info(e) is None, cls
        else:
            assert pushback is None and retry_info(e) is None, cls
        lines = request_log.lines[before:]
        assert len(lines) == 1, (cls, lines)
        assert lines[0]["status"] == e.code().name and lines[0]["error"] == reason
        assert len(e.details()) < 600 and "Traceback" not in e.details()
        seen.add(cls)
        return messages, e

    # InvalidRequest: bytes that are no GenerateRequest, a malformed one, a prompt over the byte limit.
    await expect(errors.InvalidRequest, INVALID, "BAD_REQUEST", b"\xff\xff\xff", retry="none")
    await expect(errors.InvalidRequest, INVALID, "INVALID_REQUEST", pb.GenerateRequest(prompt="x", messages=[{"role": "user", "content": "y"}]), retry="none")
    await expect(errors.InvalidRequest, INVALID, "PROMPT_TOO_LONG", request("z" * 2000), retry="none")
    _, e = await expect(errors.UnknownTier, INVALID, "UNKNOWN_TIER", request(tier="n" * 10_000), retry="none")
    assert len(e.details()) < 300  # the huge name is not echoed back

    # A tier's own status before its first message: INTERNAL passes as UpstreamFailed, DEADLINE_EXCEEDED as DeadlineExceeded.
    s.code = grpc.StatusCode.INTERNAL
    await expect(errors.UpstreamFailed, grpc.StatusCode.INTERNAL, "SCRIPTED_INTERNAL", request(tier="s"), retry="never")
    s.code = grpc.StatusCode.DEADLINE_EXCEEDED
    await expect(errors.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED", request(tier="s"), retry="never")
    s.code = grpc.StatusCode.INVALID_ARGUMENT
    await expect(errors.InvalidRequest, INVALID, "SCRIPTED_INVALID_ARGUMENT", request(tier="s"), retry="none")

    # StreamInterrupted: text, then the tier fails; the last message says how much was delivered.
    a.engine.fail_after_tokens = 3
    messages, _ = await expect(errors.StreamInterrupted, grpc.StatusCode.INTERNAL, "UPSTREAM_ERROR", request(tier="a", max_tokens=10), retry="never")
    assert messages[-1].finish_reason == common_pb2.FINISH_REASON_ERROR
    assert messages[-1].generated_tokens == 3
    a.engine.fail_after_tokens = None

    # Overloaded at a pinned tier (TIER_FULL) and TiersBusy when every tier is at its stream limit.
    # Overloaded at a pinned tier (TIER_FULL); TiersBusy when a tier says it is full and no other can take it;
    # Overloaded at the router (ROUTER_FULL: 6 streams at most).
    slow = [asyncio.create_task(_drain(router, request(tier=t, max_tokens=400))) for t in "aabbb"]
    await router.wait_for(lambda: router.backends["a"].in_flight == 2 and router.backends["b"].in_flight == 3, what="a full")
    await expect(errors.Overloaded, EXHAUSTED, "TIER_FULL", request(tier="a"), retry="after")
    s.code = grpc.StatusCode.RESOURCE_EXHAUSTED
    await expect(errors.TiersBusy, EXHAUSTED, "TIERS_FULL", request(tier="s"), retry="never")
    slow.append(asyncio.create_task(_drain(router, request(tier="b", max_tokens=400))))
    await router.wait_for(lambda: router.server.router.in_flight == 6, what="the router full")
    await expect(errors.Overloaded, EXHAUSTED, "ROUTER_FULL", request(), retry="after")
    # CallerBusy: with tokens on, a caller at its own stream limit (CALLER_FULL: 1 stream each here).
    (tmp_path / "auth").mkdir()
    (tmp_path / "auth" / "tokens").write_text("alice:" + "A" * 20 + "\n")
    authed = await started(Router(tmp_path / "auth", [tier_entry(b, max_in_flight=4)], {}, max_in_flight_per_caller=1,
                                  auth={"tokens_file": str(tmp_path / "auth" / "tokens"), "allow_plaintext_tiers": True}))
    await authed.wait_serving("b")
    alice = (("authorization", "Bearer " + "A" * 20),)
    slow.append(asyncio.create_task(_drain(authed, request(tier="b", max_tokens=400), metadata=alice)))
    await authed.wait_for(lambda: authed.server.router.in_flight == 1, what="alice's stream open")
    await expect(errors.CallerBusy, EXHAUSTED, "CALLER_FULL", request(tier="b"), retry="after", via=authed, metadata=alice)
    for task in slow:
        task.cancel()
    await asyncio.gather(*slow, return_exceptions=True)

    # NoTierAvailable: the pinned tier is down (TIER_UNAVAILABLE), then every tier is (NO_HEALTHY_TIER).
    await b.stop()
    await router.wait_for(lambda: router.backends["b"].serving is False, what="b down")
    await expect(errors.NoTierAvailable, grpc.StatusCode.UNAVAILABLE, "TIER_UNAVAILABLE", request(tier="b"), retry="never")
    await a.stop()
    await s.stop()
    await router.wait_for(lambda: not any(x.serving for x in router.backends.values()), what="all down")
    await expect(errors.NoTierAvailable, grpc.StatusCode.UNAVAILABLE, "NO_HEALTHY_TIER", request(), retry="never")

    assert seen == all_errors(), f"no scenario for {all_errors() - seen}"


def _example(cls, code: grpc.StatusCode):
    """An instance of `cls` for the table lookup (UpstreamFailed carries the tier's own status)."""
    if issubclass(cls, errors.StreamInterrupted):
        return cls("x", code.name, 0)
    if issubclass(cls, errors.UpstreamFailed):
        return cls("x", code.name)
    return cls("x")


async def _drain(router: Router, req: pb.GenerateRequest, metadata=None) -> None:
    """Hold a stream open until cancelled."""
    async for _ in router.stub.Generate(req, timeout=60, metadata=metadata):
        pass


def test_the_grpc_table_covers_every_domain_error():
    """Every RouteError maps to a real gRPC status other than OK, UNKNOWN and INTERNAL (except a tier's own INTERNAL)."""
    for cls in all_errors():
        code = grpc_status(_example(cls, grpc.StatusCode.UNAVAILABLE))
        assert code not in (grpc.StatusCode.OK, grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL), cls


@pytest.mark.parametrize("request_id", ["x" * 129, "line\nbreak", "nul\x00", "\x1b[31mred"])
async def test_request_ids_the_tiers_would_refuse_are_refused_by_the_router(mesh, request_id):
    """Over-long request ids and ids with control characters are INVALID_ARGUMENT at the router, like at the tiers."""
    router, *_ = mesh
    req = request()
    req.request_id = request_id
    _, e = await call(router, req)
    assert e.code() == INVALID and reason_of(e.trailing_metadata()) == "INVALID_REQUEST"
