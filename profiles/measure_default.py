"""Measure the bundled tiers once, one at a time, and write profiles/default.yaml.

    python profiles/measure_default.py [--mesh mesh.yaml] [--out profiles/default.yaml]

A stopgap until the profiler (`qarr profile`) exists: it starts each tier of the
mesh file as a real tier server on a free port, measures time to first token,
decode speed (1 and 8 streams) and prefill speed, asks a handful of checkable
questions for a rough accuracy figure, stops the tier, then moves on. The file
it writes says so in `measured:`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import grpc
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "protos")]

from mesh.launch import tier_command, wait_serving  # noqa: E402
from qarr.v1 import common_pb2, tier_service_pb2 as tpb, tier_service_pb2_grpc  # noqa: E402
from router.profiles import Profiles, TierProfile, dump_profiles  # noqa: E402

# Questions whose answer holds a keyword; a 135M model gets some of them.
QUESTIONS = (
    ("What is the capital of France?", "paris"),
    ("What is 2 + 2? Answer with a number.", "4"),
    ("What color is the sky on a clear day?", "blue"),
    ("How many days are in a week?", "7|seven"),
    ("What is the largest planet in the solar system?", "jupiter"),
    ("Which animal is known as the king of the jungle?", "lion"),
    ("What is the opposite of hot?", "cold"),
    ("What is the chemical symbol for water?", "h2o"),
    ("How many legs does a spider have?", "8|eight"),
    ("What language is spoken in Spain?", "spanish"),
    ("What is the capital of Japan?", "tokyo"),
    ("What gas do plants absorb from the air?", "carbon dioxide|co2"),
)
CONCURRENCY = 8
DECODE_TOKENS = 64


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(text: str, max_tokens: int) -> tpb.TierServiceGenerateRequest:
    return tpb.TierServiceGenerateRequest(
        messages=[common_pb2.ChatMessage(role="user", content=text)],
        sampling=common_pb2.SamplingParams(max_tokens=max_tokens, temperature=0.0),
    )


async def one(stub, req) -> tuple[float, float, int, int, str]:
    """(ttft_s, total_s, completion_tokens, prompt_tokens, text) of one stream."""
    started = time.perf_counter()
    first = None
    text = []
    last = None
    async for msg in stub.Generate(req, timeout=600):
        if msg.text and first is None:
            first = time.perf_counter() - started
        text.append(msg.text)
        last = msg
    total = time.perf_counter() - started
    return first or total, total, last.usage.completion_tokens, last.usage.prompt_tokens, "".join(text)


async def measure(address: str) -> dict:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = tier_service_pb2_grpc.TierServiceStub(channel)
        await one(stub, request("Hello", 4))  # warm
        ttfts = [(await one(stub, request(q, 1)))[0] * 1000 for q, _ in QUESTIONS[:8]]
        # Decode, one stream: tokens after the first over the time after the first.
        rates = []
        for q, _ in QUESTIONS[:2]:
            ttft, total, n, _, _ = await one(stub, request("Write a long story about " + q, DECODE_TOKENS))
            if n > 1:
                rates.append((n - 1) / (total - ttft))
        started = time.perf_counter()
        results = await asyncio.gather(*(one(stub, request("Write a long story about " + q, DECODE_TOKENS)) for q, _ in QUESTIONS[:CONCURRENCY]))
        tps_cn = sum(r[2] for r in results) / (time.perf_counter() - started)
        long_prompt = " ".join(f"Fact {i}: the number {i} follows {i - 1}." for i in range(120))
        pf = [await one(stub, request(long_prompt + " Which number follows 41?", 1)) for _ in range(2)]
        prompt_tps = statistics.median(p[3] / p[0] for p in pf)
        right = 0
        for q, keys in QUESTIONS:
            answer = (await one(stub, request(q, 24)))[4].lower()
            right += any(k in answer for k in keys.split("|"))
    ttfts.sort()
    return {
        "ttft_ms_p50": round(statistics.median(ttfts), 1),
        "ttft_ms_p95": round(ttfts[min(len(ttfts) - 1, int(0.95 * len(ttfts)))], 1),
        "decode_tps_c1": round(statistics.median(rates), 1),
        "decode_tps_cn": round(tps_cn, 1),
        "concurrency_n": CONCURRENCY,
        "prompt_tps": round(prompt_tps, 1),
        "accuracy": round(right / len(QUESTIONS), 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mesh", default=str(REPO / "mesh.yaml"))
    parser.add_argument("--out", default=str(REPO / "profiles/default.yaml"))
    args = parser.parse_args()
    mesh = yaml.safe_load(Path(args.mesh).read_text())
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind",
           "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "protos")])}
    tiers = {}
    loads = []
    for tier in mesh["tiers"]:
        address = f"127.0.0.1:{free_port()}"
        tier = {**tier, "address": address}
        proc = subprocess.Popen(tier_command(tier), env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            wait_serving(address, time.monotonic() + 300, proc, f"tier {tier['name']}")
            load_before = os.getloadavg()[0]
            figures = asyncio.run(measure(address))
            loads.append(f"{tier['name']}: {load_before:.1f} -> {os.getloadavg()[0]:.1f}")
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        # A nominal price: one machine-hour at $1 spread over its 8-stream throughput.
        figures["cost_per_million_tokens"] = round(1.0 / (figures["decode_tps_cn"] * 3600) * 1e6, 3)
        print(tier["name"], figures, flush=True)
        tiers[tier["name"]] = TierProfile(**figures)
        # Written after each tier, so a later failure keeps what was measured.
        dump_profiles(
            Profiles(
                measured={
                    "date": date.today().isoformat(),
                    "machine": f"{os.cpu_count()} cores {platform.machine()}, no GPU, shared with other jobs",
                    "tool": "profiles/measure_default.py (stopgap; the profiler will replace this file)",
                    "accuracy": f"PROVISIONAL: {len(QUESTIONS)} keyword-checked questions, greedy, 24 tokens",
                    "cost": "nominal: $1 per machine-hour over the 8-stream throughput",
                    # Other jobs on a shared machine slow every figure; this says how busy it was.
                    "load_average_1min": "; ".join(loads),
                },
                tiers=tiers,
            ),
            args.out,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
