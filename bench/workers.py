"""Router workers: streams/s through `python -m router --workers N` side by side for each N (default 1 and 2).

One instant fake tier; closed-loop 16-chunk streams at high concurrency from `--loadgens` load
generator processes, each over `--connections` TCP connections (SO_REUSEPORT hands out
connections, not streams, to the workers). Every router runs from the start; the arms take turns
each round (rotated, so drift cancels). Reported per arm: streams/s, the router's CPU (parent and
workers), the tier's and the load generators' CPU, errors, and the ratio to the first arm.

All of it shares this machine's cores: on a 2-core box the load generators, the tier and the
router workers compete, so a second worker can only help as far as a core is left for it.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

from bench import harness as h


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="router worker counts to compare")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--requests", type=int, default=3000, help="streams per arm and round")
    p.add_argument("--concurrency", type=int, default=64, help="streams open at once, over all load generators")
    p.add_argument("--connections", type=int, default=8, help="TCP connections per load generator")
    p.add_argument("--loadgens", type=int, default=2, help="load generator processes")
    p.add_argument("--chunks", type=int, default=16, help="text chunks per stream")
    p.add_argument("--warmup", type=int, default=200, help="warm-up streams per arm")


def start_router(out, tier_address: str, workers: int) -> h.Server:
    port = h.free_port()
    config = h.write_router_config(out / f"router-w{workers}.yaml", [{"name": "instant", "address": tier_address}])
    argv = [sys.executable, "-m", "router", "--config", str(config), "--listen", f"127.0.0.1:{port}",
            "--log-level", "WARNING", "--workers", str(workers)]
    return h.Server(f"router --workers {workers}", argv, port, out / f"router-w{workers}.log")


def process_tree_cpu(root: int) -> float:
    """CPU seconds of a process and every process below it (a router parent and its workers), from /proc."""
    parent: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    tree, frontier = [root], {root}
    while frontier:
        frontier = {pid for pid, pp in parent.items() if pp in frontier}
        tree += frontier
    total = 0.0
    for pid in tree:
        try:
            total += h.cpu_seconds(pid)
        except OSError:
            pass
    return total


def closed_parallel(lgs: list[h.LoadGen], target: str, args, requests: int) -> dict:
    """Every load generator runs its share of a closed loop at once; completed streams and the longest wall time."""
    results: list[dict] = [{} for _ in lgs]

    def one(i: int) -> None:
        results[i] = lgs[i].closed(target, h.ROUTER_METHOD, concurrency=max(1, args.concurrency // len(lgs)),
                                   requests=requests // len(lgs), max_tokens=args.chunks, channels=args.connections,
                                   timeout=600)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(lgs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    errors: dict[str, int] = {}
    for r in results:
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
    return {"completed": sum(r["completed"] for r in results), "wall_s": max(r["wall_s"] for r in results),
            "errors": errors, "ttft": [x for r in results for x in r["ttft"]]}


def run(args) -> dict:
    out = h.Output("workers", args.out)
    servers: list = []
    runs: dict[int, list[dict]] = {n: [] for n in args.workers}
    try:
        lgs = [h.LoadGen(out.dir) for _ in range(args.loadgens)]
        servers += lgs
        tier = h.start_fake_tier(out.dir, "instant")
        servers.append(tier)
        routers = {n: start_router(out.dir, tier.address, n) for n in args.workers}
        servers += routers.values()
        h.wait_all(tier, *routers.values())
        for n, router in routers.items():
            lgs[0].until_ok(router.address, h.ROUTER_METHOD)
            time.sleep(2.0)  # every worker listening (each waits for a SERVING tier first)
            closed_parallel(lgs, router.address, args, args.warmup)
        for r in range(args.rounds):
            for n in h.rotated(args.workers, r):
                router = routers[n]
                before = {"router": process_tree_cpu(router.pid), "tier": tier.cpu_s(),
                          "loadgens": sum(h.cpu_seconds(lg.pid) for lg in lgs)}
                res = closed_parallel(lgs, router.address, args, args.requests)
                after = {"router": process_tree_cpu(router.pid), "tier": tier.cpu_s(),
                         "loadgens": sum(h.cpu_seconds(lg.pid) for lg in lgs)}
                cpu = {k: after[k] - before[k] for k in before}
                runs[n].append({"streams_per_s": res["completed"] / res["wall_s"], "completed": res["completed"],
                                "wall_s": res["wall_s"], "errors": res["errors"], "cpu_s": cpu,
                                "ttft": h.summary_ms(res["ttft"])})
                print(f"  round {r + 1}: --workers {n}: {runs[n][-1]['streams_per_s']:.0f} streams/s", flush=True)
    finally:
        h.stop_all(reversed(servers))
    base = None
    rows = []
    for n in args.workers:
        rs = runs[n]
        mean = lambda f: sum(f(x) for x in rs) / len(rs)
        sps = mean(lambda x: x["streams_per_s"])
        base = base or sps
        rows.append([f"--workers {n}", sps, sps / base, mean(lambda x: x["cpu_s"]["router"] / x["wall_s"]),
                     mean(lambda x: x["cpu_s"]["tier"] / x["wall_s"]), mean(lambda x: x["cpu_s"]["loadgens"] / x["wall_s"]),
                     mean(lambda x: x["ttft"]["p50"]), sum(x["completed"] for x in rs), sum(sum(x["errors"].values()) for x in rs)])
    out.print_table(
        "workers", f"Router workers: {args.chunks}-chunk streams, concurrency {args.concurrency}, {args.loadgens} load "
        f"generators x {args.connections} connections, mean of {args.rounds} rounds (all processes share {h.machine()['cores']} cores)",
        ["router", "streams/s", "ratio", "router CPU (cores)", "tier CPU (cores)", "load gen CPU (cores)",
         "TTFT p50 ms", "completed", "errors"], rows, 2)
    out.result.update(runs=runs, params={k: v for k, v in vars(args).items() if k != "func"})
    out.save()
    return out.result
