"""python -m bench <name> [options]: one command per benchmark; each prints tables and writes
result.json and PNG plots under results/<name>/ (or --out)."""

from __future__ import annotations

import argparse
import importlib
import signal
import sys

BENCHMARKS = {
    "overhead": "TTFT and total latency through the router versus straight to the tier (and a plain relay)",
    "cost": "router CPU per request and per relayed chunk, streams/s per router process, py-spy profile",
    "routing": "routed versus pinned-to-the-most-precise-tier on a mixed eval workload with Poisson arrivals",
    "http": "added TTFT and CPU per request: the OpenAI-compatible HTTP door vs the gRPC path vs the LiteLLM proxy",
    "scaling": "100 / 500 / 1,000 open streams through one router: memory per stream, added latency, errors",
    "workers": "streams/s through python -m router --workers N side by side (1 and 2 by default)",
    "routing-quality": "offline, from the profiler's per-item outcomes: random, keyword, learned and oracle routers "
                       "and each tier alone on held-out items; APGR, CPT(50%%), CPT(80%%), cost vs accuracy",
    "report": "collect the latest results/<name>/result.json tables into one markdown file",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="name", required=True, metavar="BENCHMARK")
    for name, help_text in BENCHMARKS.items():
        module = importlib.import_module(f"bench.{name.replace('-', '_')}")
        p = sub.add_parser(name, help=help_text, description=module.__doc__)
        if name != "report":
            p.add_argument("--out", help=f"folder for result.json and plots (default results/{name})")
        module.add_arguments(p)
        p.set_defaults(func=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C, so every server a benchmark started is stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
