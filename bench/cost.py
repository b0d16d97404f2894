"""Router cost: CPU per request and per relayed chunk, and streams/s per router process.

The router's own CPU time (utime + stime from /proc, every thread) is read before and
after each run of N streams of K chunks (K = 1, 16, 64, 256 by default) from an
instant fake tier. CPU per stream = a + b x (messages relayed per stream, K text
messages + the last one) is fit by least squares: a is the per-request cost, b the
per-chunk cost. The plain grpc.aio relay is measured side by side as the reference.
Then closed-loop throughput of 16-chunk streams at high concurrency, and a py-spy
profile of the router's hot path while it runs (results/cost/profile-*).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path

from bench import harness as h

METHOD = {"direct": h.TIER_METHOD, "router": h.ROUTER_METHOD, "baseline": h.ROUTER_METHOD, "relay": h.ROUTER_METHOD}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--chunks", type=int, nargs="+", default=[1, 16, 64, 256], help="chunks (tokens) per stream")
    p.add_argument("--stream-chunks", type=int, default=4000,
                   help="about this many chunks per run (requests = max(100, this / chunks))")
    p.add_argument("--concurrency", type=int, default=8, help="concurrency of the CPU-fit runs")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--tp-concurrency", type=int, default=64, help="concurrency of the throughput runs")
    p.add_argument("--tp-requests", type=int, default=3000, help="16-chunk streams per throughput run")
    p.add_argument("--tp-rounds", type=int, default=2)
    p.add_argument("--profile-seconds", type=float, default=15.0, help="py-spy recording length (0: no profile)")
    p.add_argument("--profile-native", action="store_true", help="py-spy --native (C frames too)")
    p.add_argument("--warmup", type=int, default=100, help="warm-up requests per path")
    p.add_argument("--no-relay", action="store_true", help="skip the plain-relay reference arm")
    p.add_argument("--baseline", metavar="GIT_REF",
                   help="also measure the router of this commit (checked out into the results folder) side by side")


def _requests(args, k: int) -> int:
    return max(100, args.stream_chunks // k)


def _cpu_run(lg, servers: dict, arm: str, target: str, **kw) -> dict:
    procs = {name: s for name, s in servers.items()}
    before = {name: s.cpu_s() for name, s in procs.items()}
    lg_before = h.cpu_seconds(lg.pid)
    res = lg.closed(target, METHOD[arm], **kw)
    after = {name: s.cpu_s() for name, s in procs.items()}
    res["cpu_s"] = {name: after[name] - before[name] for name in procs}
    res["cpu_s"]["loadgen"] = h.cpu_seconds(lg.pid) - lg_before
    return res


def profile_summary(raw: Path, top: int = 15) -> dict:
    """Self and inclusive sample shares per frame from py-spy's raw (collapsed) output."""
    self_c: Counter = Counter()
    incl: Counter = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        n = int(n)
        total += n
        frames = stack.split(";")
        self_c[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    pct = lambda c: [(f, 100.0 * v / total) for f, v in c.most_common(top)] if total else []
    return {"samples": total, "self": pct(self_c), "inclusive": pct(incl)}


def run(args) -> dict:
    out = h.Output("cost", args.out)
    arms = ("router", *(("baseline",) if args.baseline else ()), *(() if args.no_relay else ("relay",)))
    servers: list = []
    try:
        lg = h.LoadGen(out.dir)
        servers.append(lg)
        tier = h.start_fake_tier(out.dir, "instant")
        router = h.start_router(out.dir, [{"name": "instant", "address": tier.address}])
        servers += [tier, router]
        procs = {"router": router, "tier": tier}
        targets = {"direct": tier.address, "router": router.address}
        if "baseline" in arms:
            source = h.checkout(args.baseline, out.dir / "baseline-src")
            baseline = h.start_router(out.dir, [{"name": "instant", "address": tier.address}], tag="baseline", repo=source)
            servers.append(baseline)
            procs["baseline"] = baseline
            targets["baseline"] = baseline.address
        if "relay" in arms:
            relay = h.start_plain_relay(out.dir, tier.address)
            servers.append(relay)
            procs["relay"] = relay
            targets["relay"] = relay.address
        h.wait_all(*servers[1:])
        for a in targets:
            lg.until_ok(targets[a], METHOD[a])
        for a in targets:
            lg.closed(targets[a], METHOD[a], concurrency=4, requests=args.warmup, max_tokens=16, timeout=60)

        # --- CPU per request and per chunk
        points: dict[str, list] = {a: [] for a in arms}
        for r in range(args.rounds):
            for k in args.chunks:
                for arm in h.rotated(arms, r + k):
                    n = _requests(args, k)
                    res = _cpu_run(lg, {arm: procs[arm], "tier": tier}, arm, targets[arm],
                                   concurrency=args.concurrency, requests=n, max_tokens=k)
                    done = res["completed"]
                    points[arm].append({"chunks": k, "messages": k + 1, "requests": done, "errors": res["errors"],
                                        "cpu_ms_per_stream": 1e3 * res["cpu_s"][arm] / max(1, done),
                                        "tier_cpu_ms_per_stream": 1e3 * res["cpu_s"]["tier"] / max(1, done),
                                        "loadgen_cpu_ms_per_stream": 1e3 * res["cpu_s"]["loadgen"] / max(1, done),
                                        "wall_s": res["wall_s"]})
            print(f"  round {r + 1}/{args.rounds} done", flush=True)
        fits = {}
        for arm in arms:
            a, b = h.fit_line([p["messages"] for p in points[arm]], [p["cpu_ms_per_stream"] for p in points[arm]])
            fits[arm] = {"per_request_ms": a, "per_chunk_ms": b}
        ratios = [(a, b) for a, b in (("router", "baseline"), ("router", "relay")) if b in arms]
        rows = []
        for k in args.chunks:
            mean = {}
            for arm in arms:
                ys = [p["cpu_ms_per_stream"] for p in points[arm] if p["chunks"] == k]
                mean[arm] = sum(ys) / len(ys)
            ys = [p["tier_cpu_ms_per_stream"] for p in points["router"] if p["chunks"] == k]
            rows.append([k, *(mean[a] for a in arms), *(mean[a] / mean[b] if mean[b] else float("nan") for a, b in ratios),
                         sum(ys) / len(ys)])
        headers = ["chunks/stream", *(f"{a} CPU ms/stream" for a in arms), *(f"{a}/{b}" for a, b in ratios), "tier CPU ms/stream"]
        out.print_table("cpu_by_chunks", "CPU per stream (mean of rounds)", headers, rows, 3)
        fit_rows = [[arm, fits[arm]["per_request_ms"], fits[arm]["per_chunk_ms"],
                     fits[arm]["per_request_ms"] + 17 * fits[arm]["per_chunk_ms"]] for arm in arms]
        for a, b in ratios:
            fa, fb = fit_rows[arms.index(a)], fit_rows[arms.index(b)]
            fit_rows.append([f"{a}/{b}", *(x / y if y else float("nan") for x, y in zip(fa[1:], fb[1:]))])
        out.print_table("cpu_fit", "CPU fit: ms = per_request + per_chunk × messages (least squares)",
                        ["process", "per request ms", "per chunk ms", "16-chunk stream ms"], fit_rows, 4)

        # --- throughput, 16-chunk streams
        tp_arms = ("direct", *arms)
        tp = {a: [] for a in tp_arms}
        for r in range(args.tp_rounds):
            for arm in h.rotated(tp_arms, r):
                watch = {"tier": tier, **({arm: procs[arm]} if arm != "direct" else {})}
                res = _cpu_run(lg, watch, arm, targets[arm], concurrency=args.tp_concurrency,
                               requests=args.tp_requests, max_tokens=16)
                cpu = res["cpu_s"].get(arm, 0.0)
                tp[arm].append({"streams_per_s": res["completed"] / res["wall_s"], "wall_s": res["wall_s"],
                                "completed": res["completed"], "errors": res["errors"], "cpu_s": res["cpu_s"],
                                "cpu_util": cpu / res["wall_s"], "streams_per_cpu_s": res["completed"] / cpu if cpu else float("nan"),
                                "ttft": h.summary_ms(res["ttft"]), "total": h.summary_ms(res["total"])})
        tp_rows = []
        for arm in tp_arms:
            runs = tp[arm]
            mean = lambda key: sum(x[key] for x in runs) / len(runs)
            tp_rows.append([arm, mean("streams_per_s"), mean("cpu_util") if arm != "direct" else float("nan"),
                            mean("streams_per_cpu_s") if arm != "direct" else float("nan"),
                            sum(x["completed"] for x in runs), sum(sum(x["errors"].values()) for x in runs)])
        out.print_table("throughput",
                        f"Throughput, 16-chunk streams, concurrency {args.tp_concurrency} (whole box: tier + load generator share the cores)",
                        ["path", "streams/s (measured)", "proxy CPU util (cores)", "streams per proxy CPU-second", "completed", "errors"],
                        tp_rows, 1)

        # --- profile of the router's hot path
        profile = None
        if args.profile_seconds > 0:
            profile = _profile(args, out, lg, router, targets["router"])
    finally:
        h.stop_all(reversed(servers))
    out.result.update(points=points, fits=fits, throughput=tp, profile=profile,
                      params={k: v for k, v in vars(args).items() if k != "func"})

    def draw(plt):
        fig, ax = plt.subplots(figsize=(6, 4))
        for arm in arms:
            xs = [p["messages"] for p in points[arm]]
            ax.scatter(xs, [p["cpu_ms_per_stream"] for p in points[arm]], s=12, label=arm)
            f = fits[arm]
            ax.plot([0, max(xs)], [f["per_request_ms"], f["per_request_ms"] + f["per_chunk_ms"] * max(xs)],
                    label=f"{arm}: {f['per_request_ms']:.3f} ms + {f['per_chunk_ms']:.4f} ms/chunk")
        ax.set_xlabel("messages relayed per stream")
        ax.set_ylabel("proxy CPU ms per stream")
        ax.legend(fontsize=8)
        return fig

    out.result["plots"] = [out.plot("cpu_fit.png", draw)]
    out.save()
    return out.result


def _profile(args, out: h.Output, lg: h.LoadGen, router: h.Server, target: str) -> dict | None:
    spy = shutil.which("py-spy") or str(Path(__import__("sys").executable).with_name("py-spy"))
    if not Path(spy).exists():
        print("py-spy not found: no profile (pip install py-spy)", flush=True)
        return None
    raw = out.dir / "profile-router.txt"
    cmd = [spy, "record", "--pid", str(router.pid), "--rate", "200", "--format", "raw", "--output", str(raw),
           "--duration", str(int(args.profile_seconds)), "--nonblocking"]
    if args.profile_native:
        cmd.append("--native")
    spy_log = open(out.dir / "py-spy.log", "wb")
    proc = subprocess.Popen(cmd, stdout=spy_log, stderr=subprocess.STDOUT)
    time.sleep(1.0)
    deadline = time.monotonic() + args.profile_seconds + 10
    while proc.poll() is None and time.monotonic() < deadline:
        lg.closed(target, h.ROUTER_METHOD, concurrency=args.tp_concurrency, requests=max(200, args.tp_requests // 4),
                  max_tokens=16)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    spy_log.close()
    if not raw.exists():
        print(f"py-spy wrote no profile; see {out.dir / 'py-spy.log'}", flush=True)
        return None
    summary = profile_summary(raw)
    rows = [[frame[:110], f"{share:.1f} %"] for frame, share in summary["self"]]
    out.print_table("profile_self", f"Router hot path, py-spy self time ({summary['samples']} samples, {raw.name})",
                    ["frame", "self"], rows)
    rows = [[frame[:110], f"{share:.1f} %"] for frame, share in summary["inclusive"]]
    out.print_table("profile_inclusive", "Router hot path, py-spy inclusive time", ["frame", "inclusive"], rows)
    summary["raw"] = str(raw)
    return summary
