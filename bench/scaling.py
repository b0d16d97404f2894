"""Scaling: 100, 500, 1,000 concurrent open streams through one router process.

A paced fake tier (1 token a second by default) keeps every stream open for
seconds. For each N, a fresh router (and a fresh plain relay, the reference) is
started and warmed up; its RSS is read idle, then again once all N streams have
their first chunk (and its peak while they run): memory per stream =
(RSS open - RSS idle) / N. Latency added = the router's (relay's) TTFT and total
latency minus the same N streams sent straight to the tier, arms alternated.
"""

from __future__ import annotations

import argparse
import threading
import time

from bench import harness as h
from profiler.stats import percentile

METHOD = {"direct": h.TIER_METHOD, "router": h.ROUTER_METHOD, "relay": h.ROUTER_METHOD}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--streams", type=int, nargs="+", default=[100, 500, 1000])
    p.add_argument("--token-ms", type=float, default=1000.0, help="tier delay per token")
    p.add_argument("--max-tokens", type=int, default=8, help="tokens per stream (stream length = this x token-ms)")
    p.add_argument("--ramp-s", type=float, default=2.0, help="stream starts are spread over this many seconds")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--warmup", type=int, default=20, help="warm-up streams (1 token) before the idle RSS reading")
    p.add_argument("--no-relay", action="store_true", help="skip the plain-relay reference arm")


class PeakRss:
    """Samples a process's RSS every 50 ms in a thread; `.peak` is the largest seen."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, h.rss_bytes(self.pid))
            except OSError:
                return
            self._stop.wait(0.05)

    def stop(self) -> int:
        self._stop.set()
        self._t.join()
        return self.peak


def run(args) -> dict:
    out = h.Output("scaling", args.out)
    arms = ("direct", "router") if args.no_relay else ("direct", "router", "relay")
    stream_s = args.max_tokens * args.token_ms / 1000
    runs: dict = {n: {a: [] for a in arms} for n in args.streams}
    servers: list = []
    try:
        lg = h.LoadGen(out.dir)
        tier = h.start_fake_tier(out.dir, "paced", args.token_ms).wait_serving()
        servers += [lg, tier]
        for r in range(args.rounds):
            for i, n in enumerate(args.streams):
                for arm in h.rotated(arms, r + i):
                    proxy = None
                    if arm == "router":
                        proxy = h.start_router(out.dir, [{"name": "paced", "address": tier.address}], tag=f"router-{n}").wait_serving()
                    elif arm == "relay":
                        proxy = h.start_plain_relay(out.dir, tier.address, tag=f"relay-{n}").wait_serving()
                    target = proxy.address if proxy else tier.address
                    try:
                        lg.until_ok(target, METHOD[arm])
                        lg.closed(target, METHOD[arm], concurrency=args.warmup, requests=args.warmup, max_tokens=1,
                                  timeout=60)  # warm-up
                        time.sleep(0.3)
                        base = proxy.rss() if proxy else 0
                        cpu0 = proxy.cpu_s() if proxy else 0.0
                        peak = PeakRss(proxy.pid) if proxy else None
                        at_open: dict = {}

                        def on_open(ev, proxy=proxy, at_open=at_open):
                            at_open["rss"] = proxy.rss() if proxy else 0
                            at_open["tier_rss"] = tier.rss()

                        res = lg.closed(target, METHOD[arm], concurrency=n, requests=n, max_tokens=args.max_tokens,
                                        report_open=True, ramp_s=args.ramp_s, on_event=on_open,
                                        timeout=stream_s + args.ramp_s + 120)
                        peak_rss = peak.stop() if peak else 0
                        cpu = (proxy.cpu_s() - cpu0) if proxy else float("nan")
                    finally:
                        if proxy:
                            proxy.stop()
                    open_rss = at_open.get("rss", 0)
                    runs[n][arm].append({
                        "ttft": h.summary_ms(res["ttft"]), "total": h.summary_ms(res["total"]),
                        "errors": res["errors"], "completed": res["completed"], "all_open": res["open_reported"],
                        "rss_idle": base, "rss_open": open_rss, "rss_peak": peak_rss,
                        "kb_per_stream_open": (open_rss - base) / n / 1024 if proxy and open_rss else float("nan"),
                        "kb_per_stream_peak": (peak_rss - base) / n / 1024 if proxy else float("nan"),
                        "cpu_s": cpu, "tier_rss_open": at_open.get("tier_rss", 0),
                    })
                    print(f"  N={n} {arm}: completed {res['completed']}, errors {res['errors']}, "
                          f"TTFT p50 {percentile(res['ttft'], 50) * 1e3:.1f} ms", flush=True)
    finally:
        h.stop_all(reversed(servers))

    def mean(xs):
        xs = [x for x in xs if x == x]
        return sum(xs) / len(xs) if xs else float("nan")

    rows, summary = [], {}
    for n in args.streams:
        d = runs[n]["direct"]
        summary[n] = {}
        for arm in arms:
            rs = runs[n][arm]
            s = {
                "ttft_p50": mean([x["ttft"]["p50"] for x in rs]), "ttft_p99": mean([x["ttft"]["p99"] for x in rs]),
                "total_p50": mean([x["total"]["p50"] for x in rs]), "total_p99": mean([x["total"]["p99"] for x in rs]),
                "errors": sum(sum(x["errors"].values()) for x in rs), "completed": sum(x["completed"] for x in rs),
                "kb_open": mean([x["kb_per_stream_open"] for x in rs]), "kb_peak": mean([x["kb_per_stream_peak"] for x in rs]),
                "rss_idle_mib": mean([x["rss_idle"] for x in rs]) / 2**20 if arm != "direct" else float("nan"),
            }
            if arm != "direct":
                s["added_ttft_p50"] = s["ttft_p50"] - mean([x["ttft"]["p50"] for x in d])
                s["added_ttft_p99"] = s["ttft_p99"] - mean([x["ttft"]["p99"] for x in d])
                s["added_total_p99"] = s["total_p99"] - mean([x["total"]["p99"] for x in d])
            else:
                s["added_ttft_p50"] = s["added_ttft_p99"] = s["added_total_p99"] = float("nan")
            summary[n][arm] = s
            rows.append([n, arm, s["completed"], s["errors"], s["ttft_p50"], s["ttft_p99"], s["added_ttft_p50"],
                         s["added_ttft_p99"], s["added_total_p99"], s["rss_idle_mib"], s["kb_open"], s["kb_peak"]])
    out.result.update(runs=runs, summary=summary, params={k: v for k, v in vars(args).items() if k != "func"})
    out.print_table(
        "scaling",
        f"Open streams through one process (tier paced {args.token_ms:g} ms/token, {args.max_tokens} tokens, ramp {args.ramp_s:g} s)",
        ["streams", "path", "completed", "errors", "TTFT p50 ms", "TTFT p99 ms", "added TTFT p50", "added TTFT p99",
         "added total p99", "idle RSS MiB", "KB/stream (all open)", "KB/stream (peak)"], rows, 1)

    def draw(plt):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for arm in arms[1:]:
            axes[0].plot(args.streams, [summary[n][arm]["kb_open"] for n in args.streams], "o-", label=arm)
            axes[1].plot(args.streams, [summary[n][arm]["added_ttft_p99"] for n in args.streams], "o-", label=arm)
        axes[0].axhline(100, color="grey", ls="--", lw=0.8, label="target 100 KB")
        axes[0].set_ylabel("RSS per open stream, KB")
        axes[1].set_ylabel("added TTFT p99, ms")
        for ax in axes:
            ax.set_xlabel("open streams")
            ax.legend()
        return fig

    out.result["plots"] = [out.plot("scaling.png", draw)]
    out.save()
    return out.result
