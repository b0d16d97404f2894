"""`qarr`: talk to a QARR router from a terminal or a script."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict

from clients.client import DEFAULT_TARGET, Client
from clients.errors import QarrError


def _generate(args) -> int:
    options = {"max_tokens": args.max_tokens, "tier": args.tier or "", "latency_budget_ms": args.latency_budget_ms}
    if args.temperature is not None:
        options["temperature"] = args.temperature
    if args.min_accuracy is not None:
        options["min_accuracy"] = args.min_accuracy
    prompt_kw = {"messages": [{"role": "user", "content": args.prompt}]} if not args.raw else {}
    with Client(args.target, timeout=args.timeout) as client:
        last = None
        for chunk in client.generate(args.prompt if args.raw else None, **prompt_kw, **options):
            if args.json:
                print(json.dumps(asdict(chunk)), flush=True)
            else:
                sys.stdout.write(chunk.text)
                sys.stdout.flush()
            last = chunk
    if not args.json and last is not None:
        u = last.usage
        print(
            f"\n[tier={last.tier} quantization={last.quantization} reason={last.routing_reason} "
            f"finish={last.finish_reason} tokens={u.prompt_tokens}+{u.completion_tokens}]",
            file=sys.stderr,
        )
    return 0


def _tiers(args) -> int:
    with Client(args.target, timeout=args.timeout) as client:
        tiers = client.tiers()
    if args.json:
        print(json.dumps([asdict(t) for t in tiers], indent=2))
        return 0
    header = ("NAME", "QUANT", "HEALTH", "BREAKER", "IN-FLIGHT", "RUN/WAIT", "KV", "ADDRESS", "MODEL")
    rows = [
        (t.name, t.quantization, t.health, t.breaker, str(t.in_flight), f"{t.running_requests}/{t.waiting_requests}",
         f"{t.kv_cache_usage:.0%}", t.address, t.model)
        for t in tiers
    ]
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    for r in (header, *rows):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


def _health(args) -> int:
    with Client(args.target, timeout=args.timeout) as client:
        status = client.health(args.service)
    print(status)
    return 0 if status == "SERVING" else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qarr", description="Client for the QARR routing mesh.")
    parser.add_argument("--target", default=os.environ.get("QARR_TARGET", DEFAULT_TARGET), help="router address (env QARR_TARGET; default %(default)s)")
    parser.add_argument("--timeout", type=float, default=120.0, help="deadline per call in seconds (default %(default)s)")
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="stream an answer to a prompt")
    g.add_argument("prompt", help="the question or instruction")
    g.add_argument("--raw", action="store_true", help="send as a plain prompt, without the chat template")
    g.add_argument("--tier", help="pin a tier by name")
    g.add_argument("--max-tokens", type=int, default=256, help="most tokens to generate (default %(default)s)")
    g.add_argument("--temperature", type=float, default=0.0, help="sampling temperature (default %(default)s: greedy)")
    g.add_argument("--latency-budget-ms", type=int, default=0, help="end-to-end latency budget; 0 = class default")
    g.add_argument("--min-accuracy", type=float, help="accuracy floor 0-1 for the tier choice")
    g.add_argument("--json", action="store_true", help="print each chunk as a JSON line")
    g.set_defaults(func=_generate)

    t = sub.add_parser("tiers", help="list tiers with health, breaker state and load")
    t.add_argument("--json", action="store_true", help="print JSON instead of a table")
    t.set_defaults(func=_tiers)

    h = sub.add_parser("health", help="check the router's grpc.health.v1 status (exit 1 unless SERVING)")
    h.add_argument("--service", default="", help="service name to check ('' = whole server)")
    h.set_defaults(func=_health)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except QarrError as e:
        print(f"error: {type(e).__name__}: {e.message}" + (f" ({e.reason})" if e.reason else ""), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
