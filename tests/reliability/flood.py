"""A second client process that sends N concurrent Generate calls with a huge prompt when told to.

    python -m tests.reliability.flood ADDRESS --count 8 --prompt-bytes 3900000

Connects, prints `ready`, waits for a line on stdin, sends the calls at once, and prints one JSON line:
[[status, seconds, details, ErrorInfo reason], ...]. Running it in its own process keeps the cost of building and sending
31 MB off the test's event loop, where the small requests it measures are timed, as with a real caller.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import grpc

from mesh.status import reason_of
from qarr.v1 import common_pb2, router_service_pb2 as pb


async def one(call, raw: bytes) -> list:
    started = time.monotonic()
    try:
        async for _ in call(raw, timeout=30):
            pass
        return ["OK", time.monotonic() - started, "", ""]
    except grpc.aio.AioRpcError as e:
        return [e.code().name, time.monotonic() - started, (e.details() or "")[:200], reason_of(e.trailing_metadata())]


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("address")
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--prompt-bytes", type=int, default=3_900_000)
    args = parser.parse_args(argv)
    raw = pb.GenerateRequest(prompt="x" * args.prompt_bytes, sampling=common_pb2.SamplingParams(max_tokens=4)).SerializeToString()
    async with grpc.aio.insecure_channel(args.address, options=(("grpc.enable_retries", 0),)) as channel:
        await channel.channel_ready()
        call = channel.unary_stream("/qarr.v1.RouterService/Generate")
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        results = await asyncio.gather(*(one(call, raw) for _ in range(args.count)))
    print(json.dumps(results), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
