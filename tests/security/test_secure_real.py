"""The real vLLM CPU tier behind mutual TLS: started with `--tls.*` flags, it refuses a direct call without the
router's certificate, and a TLS router with tokens serves a real answer through it."""

from __future__ import annotations

import grpc
import pytest

from launcher.process import free_port
from mesh.config import ClientTLS
from qarr.v1 import router_service_pb2_grpc, tier_service_pb2, tier_service_pb2_grpc
from tests.harness import start_tier_process
from tests.router.routing_helpers import Router, request

pytestmark = pytest.mark.engine


async def test_a_real_tier_with_mutual_tls_serves_only_through_the_router(pki, bundled_model, started, tmp_path):
    """A real tier started with --tls.cert/--tls.key/--tls.client-ca refuses plaintext and a caller's certificate, and
    alice's Generate through the TLS router (router-client certificate upstream) returns the model's text."""
    port = free_port()
    tier = start_tier_process(
        "bf16", "--model", str(bundled_model), "--dtype", "bfloat16", "--quantization", "bf16", "--max-model-len", "1024",
        "--kv-cache-gib", "0.25", "--grace-seconds", "1", "--tls.cert", pki.path("tier.pem"), "--tls.key", pki.path("tier.key"),
        "--tls.client-ca", pki.path("router-ca.pem"), port=port, log=tmp_path / "tier.log",
    )
    tier.tls = ClientTLS.model_validate(pki.upstream())  # how wait_serving checks its health: as the router
    try:
        tier.wait_serving(timeout=300)
        address = f"127.0.0.1:{port}"
        for what, credentials in (("plaintext", None), ("a caller's certificate", pki.credentials(client="client"))):
            channel = grpc.aio.secure_channel(address, credentials) if credentials else grpc.aio.insecure_channel(address)
            async with channel:
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await tier_service_pb2_grpc.TierServiceStub(channel).GetLoad(tier_service_pb2.GetLoadRequest(), timeout=5)
                assert e.value.code() == grpc.StatusCode.UNAVAILABLE, what

        router = await started(Router(
            tmp_path, [{"name": "bf16", "address": address, "model": str(bundled_model), "max_model_len": 1024}], {},
            tls=pki.server("router"), upstream_tls=pki.upstream(), auth={"tokens_file": pki.path("tokens")},
        ))
        await router.wait_serving("bf16")
        chat = request("", 16, tier="bf16")
        chat.sampling.temperature = 0.0  # greedy: the bundled model answers Paris
        chat.messages.add(role="user", content="What is the capital of France?")
        async with grpc.aio.secure_channel(f"127.0.0.1:{router.server.mesh.port}", pki.credentials()) as channel:
            stub = router_service_pb2_grpc.RouterServiceStub(channel)
            messages = [m async for m in stub.Generate(chat, timeout=120, metadata=pki.bearer("alice"))]
        text = "".join(m.text for m in messages)
        assert messages[-1].tier == "bf16" and messages[-1].usage.completion_tokens > 0 and "Paris" in text, text
        print(f"\nreal tier over mutual TLS, TLS router with a token: {text.strip()!r}")
    finally:
        tier.stop()


