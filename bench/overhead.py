"""Router overhead: TTFT and total latency through the router versus straight to the tier.

Same fake-engine tier behind the real tier server for every arm, so only the mesh
hop is measured: `direct` (client -> tier), `router` (client -> QARR router -> tier)
and `relay` (client -> plain grpc.aio byte relay -> tier, the reference). Arms are
alternated round by round so drift on a shared machine cancels.
(a) instant tokens at concurrency 1, 16, 64; (b) tokens paced at 20 ms, 256 streams.
"""

from __future__ import annotations

import argparse

from bench import harness as h
from profiler.stats import percentile

ARMS = ("direct", "router", "relay")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64], help="instant-tier concurrencies")
    p.add_argument("--requests", type=int, default=0,
                   help="requests per arm per round and concurrency (default: 150 at c=1, 20 x c above)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--max-tokens", type=int, default=16, help="chunks per stream")
    p.add_argument("--paced-streams", type=int, default=256)
    p.add_argument("--paced-ms", type=float, default=20.0, help="tier delay per token in the paced case")
    p.add_argument("--paced-requests", type=int, default=512, help="paced requests per arm per round")
    p.add_argument("--paced-rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=40, help="warm-up requests per arm")
    p.add_argument("--no-relay", action="store_true", help="skip the plain-relay reference arm")


def _requests(args, c: int) -> int:
    return args.requests or (150 if c == 1 else 20 * c)


def _measure(lg: h.LoadGen, targets: dict, method: dict, arms, rounds: int, c: int, n: int, max_tokens: int) -> dict:
    samples = {a: {"ttft": [], "total": [], "errors": {}, "round_p50_ttft": []} for a in arms}
    for r in range(rounds):
        for arm in h.rotated(arms, r):
            res = lg.closed(targets[arm], method[arm], concurrency=c, requests=n, max_tokens=max_tokens)
            s = samples[arm]
            s["ttft"] += res["ttft"]
            s["total"] += res["total"]
            s["round_p50_ttft"].append(percentile(res["ttft"], 50))
            for k, v in res["errors"].items():
                s["errors"][k] = s["errors"].get(k, 0) + v
    return samples


def _rows(case: str, samples: dict, arms) -> tuple[list, dict]:
    stats = {a: {"ttft": h.summary_ms(samples[a]["ttft"]), "total": h.summary_ms(samples[a]["total"]),
                 "errors": samples[a]["errors"]} for a in arms}
    rows = []
    for a in arms:
        t, tot = stats[a]["ttft"], stats[a]["total"]
        rows.append([case, a, t["n"], t["p50"], t["p95"], t["p99"], tot["p50"], tot["p95"], tot["p99"],
                     sum(stats[a]["errors"].values())])
    for a in arms[1:]:
        d = {k: stats[a]["ttft"][k] - stats["direct"]["ttft"][k] for k in ("p50", "p95", "p99")}
        dt = {k: stats[a]["total"][k] - stats["direct"]["total"][k] for k in ("p50", "p95", "p99")}
        # Per-round paired p50 differences: robust to drift between rounds.
        paired = sorted(x - y for x, y in zip(samples[a]["round_p50_ttft"], samples["direct"]["round_p50_ttft"]))
        stats[a]["added_ttft_ms"] = d
        stats[a]["added_total_ms"] = dt
        stats[a]["added_ttft_p50_ms_paired_median"] = percentile(paired, 50) * 1e3
        rows.append([case, f"+{a} − direct", "", d["p50"], d["p95"], d["p99"], dt["p50"], dt["p95"], dt["p99"], ""])
    return rows, stats


def run(args) -> dict:
    out = h.Output("overhead", args.out)
    arms = ("direct", "router") if args.no_relay else ARMS
    method = {"direct": h.TIER_METHOD, "router": h.ROUTER_METHOD, "relay": h.ROUTER_METHOD}
    servers: list = []
    headers = ["case", "arm", "n", "TTFT p50", "TTFT p95", "TTFT p99", "total p50", "total p95", "total p99", "errors"]
    rows: list = []
    cases: dict = {}
    try:
        lg = h.LoadGen(out.dir)
        servers.append(lg)
        for paced in (False, True):
            delay = args.paced_ms if paced else 0.0
            kind = "paced" if paced else "instant"
            tier = h.start_fake_tier(out.dir, kind, delay)
            router = h.start_router(out.dir, [{"name": kind, "address": tier.address}], tag=f"router-{kind}")
            servers += [tier, router]
            targets = {"direct": tier.address, "router": router.address}
            if "relay" in arms:
                relay = h.start_plain_relay(out.dir, tier.address, tag=f"relay-{kind}")
                servers.append(relay)
                targets["relay"] = relay.address
            h.wait_all(*servers[1:])
            for a in arms:
                lg.until_ok(targets[a], method[a])
            for a in arms:  # warm-up: channels, the router's first health answer, lazy imports
                lg.closed(targets[a], method[a], concurrency=4, requests=args.warmup, max_tokens=args.max_tokens, timeout=60)
            if not paced:
                for c in args.concurrency:
                    case = f"instant c={c}"
                    samples = _measure(lg, targets, method, arms, args.rounds, c, _requests(args, c), args.max_tokens)
                    r, cases[case] = _rows(case, samples, arms)
                    rows += r
                    print(f"  {case}: " + ", ".join(f"{a} TTFT p50 {cases[case][a]['ttft']['p50']:.2f} ms" for a in arms), flush=True)
            else:
                case = f"paced {args.paced_ms:g} ms c={args.paced_streams}"
                samples = _measure(lg, targets, method, arms, args.paced_rounds, args.paced_streams,
                                   args.paced_requests, args.max_tokens)
                r, cases[case] = _rows(case, samples, arms)
                rows += r
            h.stop_all(reversed(servers[1:]))
            del servers[1:]
    finally:
        h.stop_all(reversed(servers))
    out.result["cases"] = cases
    out.result["params"] = {k: v for k, v in vars(args).items() if k != "func"}
    out.print_table("latency", f"Router overhead, ms ({args.max_tokens} chunks per stream; fake tier)", headers, rows)

    def draw(plt):
        names = list(cases)
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for ax, q in zip(axes, ("p50", "p99")):
            width = 0.8 / max(1, len(arms) - 1)
            for i, a in enumerate(arms[1:]):
                ax.bar([x + i * width for x in range(len(names))], [cases[n][a]["added_ttft_ms"][q] for n in names],
                       width, label=f"{a} − direct")
            ax.set_xticks([x + width * (len(arms) - 2) / 2 for x in range(len(names))], names, rotation=15)
            ax.set_ylabel(f"added TTFT {q}, ms")
            ax.axhline(0, color="black", lw=0.5)
            ax.legend()
        fig.suptitle("Added time to first token versus straight to the tier")
        return fig

    out.result["plots"] = [out.plot("added_ttft.png", draw)]
    out.save()
    return out.result
