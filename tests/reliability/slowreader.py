"""A caller that opens streams and then reads nothing, in its own process, so the test can stop it dead.

    python -m tests.reliability.slowreader ADDRESS --short 5000 --long 100000 --streams 20

Opens one stream of `--short` tokens and `--streams` of `--long` tokens, prints `open`, and waits for a
line on stdin. The test SIGSTOPs it meanwhile: a stopped process reads nothing at all, not even into
gRPC's buffers, so only flow control stands between the router and its memory. On the line it reads the
short stream to its end, cancels the others, and prints one JSON line: {"texts": [...], "code": ...}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import grpc

from qarr.v1 import common_pb2, router_service_pb2 as pb, router_service_pb2_grpc


def request(tokens: int) -> pb.GenerateRequest:
    return pb.GenerateRequest(prompt="Name three colours.", sampling=common_pb2.SamplingParams(max_tokens=tokens),
                              routing=pb.RoutingHints(min_accuracy=0.0, latency_budget_ms=600_000))


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("address")
    parser.add_argument("--short", type=int, default=5_000)
    parser.add_argument("--long", type=int, default=100_000)
    parser.add_argument("--streams", type=int, default=20)
    args = parser.parse_args(argv)
    async with grpc.aio.insecure_channel(args.address, options=(("grpc.enable_retries", 0),)) as channel:
        stub = router_service_pb2_grpc.RouterServiceStub(channel)
        short = stub.Generate(request(args.short), timeout=600)
        others = [stub.Generate(request(args.long), timeout=600) for _ in range(args.streams)]
        await short.wait_for_connection()
        print("open", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        texts, code = [], "OK"
        try:
            async for msg in short:
                texts.append(msg.text)
        except grpc.aio.AioRpcError as e:
            code = e.code().name
        for call in others:
            call.cancel()
    print(json.dumps({"texts": texts, "code": code}), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
