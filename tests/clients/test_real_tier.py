"""The SDK and `qarr batch` on the real vLLM CPU tier (bundled model), through a real router."""

from __future__ import annotations

import asyncio
import json

import pytest

from clients import AsyncClient, Client
from tests.clients.conftest import run_cli, running_mesh

pytestmark = pytest.mark.engine
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


async def test_sdk_and_batch_on_the_real_cpu_tier(real_tier, tmp_path):
    """On the real tier: sync and async streams deliver text with usage and tier, and `qarr batch` writes one line per prompt."""
    async with running_mesh({}, extra_tiers={"bf16": real_tier}, serving=("bf16",)) as router:

        def stream():
            with Client(router) as client:
                return list(client.generate(messages=QUESTION, max_tokens=12, temperature=0.0))

        chunks = await asyncio.to_thread(stream)
        last = chunks[-1]
        assert "".join(c.text for c in chunks).strip()
        assert last.finish_reason in ("stop", "length") and last.tier == "bf16" and last.quantization == "bf16"
        assert last.usage.completion_tokens == last.generated_tokens > 0 and last.usage.prompt_tokens > 5

        async with AsyncClient(router) as client:
            async_chunks = [c async for c in client.generate(messages=QUESTION, max_tokens=12, temperature=0.0)]
        assert "".join(c.text for c in async_chunks).strip() and async_chunks[-1].tier == "bf16"

        with open(tmp_path / "in.jsonl", "w") as f:
            for i in range(6):
                f.write(json.dumps({"id": i, "messages": [{"role": "user", "content": f"Say the number {i}."}]}) + "\n")
        code, _, err = await run_cli(
            "batch", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"), "--target", router,
            "--concurrency", "3", "--max-tokens", "8", "--temperature", "0",
        )
        assert code == 0, err
        results = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
        assert sorted(r["id"] for r in results) == [str(i) for i in range(6)]
        assert all(r["error"] is None and r["tier"] == "bf16" and r["text"] and r["usage"]["completion_tokens"] > 0 for r in results)
        print(err)
