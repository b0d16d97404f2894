"""TTFT and decode tok/s through a running router, per tier, one stream at a time.

    .venv/bin/python scripts/measure_mesh.py [--target 127.0.0.1:50051] [--runs 8] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from clients import Client

PROMPTS = ["Count from one to fifty in words, separated by commas.", "List the months of the year, one per line, then the days of the week."]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="127.0.0.1:50051")
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    with Client(args.target, timeout=300) as client:
        tiers = [t.name for t in client.tiers()]
        print(f"load average {os.getloadavg()[0]:.1f}; {args.runs} runs per tier, max_tokens {args.max_tokens}, greedy")
        print(f"{'tier':8} {'TTFT p50 ms':>12} {'TTFT max ms':>12} {'decode tok/s':>13} {'tokens':>7}")
        for tier in tiers:
            client.complete("Hello", tier=tier, max_tokens=2)  # warm
            ttfts, rates, tokens = [], [], 0
            for i in range(args.runs):
                started = time.perf_counter()
                first = None
                for chunk in client.generate(messages=[{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
                                             tier=tier, max_tokens=args.max_tokens, temperature=0):
                    if first is None and chunk.text:
                        first = time.perf_counter()
                    last = chunk
                end = time.perf_counter()
                n = last.usage.completion_tokens
                ttfts.append((first - started) * 1000)
                if n > 1:
                    rates.append((n - 1) / (end - first))
                tokens += n
            print(f"{tier:8} {statistics.median(ttfts):12.1f} {max(ttfts):12.1f} {statistics.median(rates):13.1f} {tokens:7d}")


if __name__ == "__main__":
    main()
