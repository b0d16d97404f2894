"""Routing benefit: QARR routing versus everything pinned to the most precise tier.

A mixed workload (about 80 % short/simple, 20 % long/complex eval items), Poisson
arrivals at --rate, the same schedule for both arms in a round, arms alternated
round by round. (a) pinned: routing.tier = the precise tier; (b) routed: hints
only (simple: a tight latency_budget_ms; complex: a loose budget and min_accuracy).
Reports p50/p95 latency, TTFT, throughput, accuracy on the items, estimated cost
and which tiers served. Tiers come from a mesh file (bench/meshes/cpu.yaml by
default: one real vLLM engine); the same command runs on a GPU with a GPU mesh file.
"""

from __future__ import annotations

import argparse
import random
from collections import Counter
from pathlib import Path

from bench import harness as h
from bench.evalset import Item, load_items
from launcher.process import ServerProcess, tier_process
from mesh.config import MeshConfig, MeshConfigError, TierSpec, load_mesh

# Relative cost per million tokens when neither the mesh file nor a profiles file says.
DEFAULT_COST = {"fp32": 1.0, "bf16": 0.5, "fp16": 0.5, "fp8": 0.3, "w8a8": 0.3, "int8": 0.3, "awq": 0.2,
                "gptq": 0.2, "w4a16": 0.2}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mesh", default=str(h.REPO / "bench/meshes/cpu-2engines.yaml"),
                   help="mesh file of the tiers to start (see bench/meshes/; default: two real CPU tiers, fp32 and bf16); "
                        "addresses are replaced by free ports")
    p.add_argument("--model", help="model folder for every vLLM tier (overrides the mesh file's)")
    p.add_argument("--precise", help="the tier the pinned arm uses (default: the mesh file's first tier)")
    p.add_argument("--eval-set", help="a .jsonl file or a folder of them (default: evals/ if present, else built-in)")
    p.add_argument("--profiles", default=str(h.REPO / "profiles/default.yaml"),
                   help="profiles file (router/profiles.py schema) the router routes on; also gives cost per million tokens")
    # Defaults sized to finish in a few minutes on the 2-core CPU tiers; raise them on a GPU.
    p.add_argument("--rate", type=float, default=0.5, help="Poisson arrival rate, requests/s")
    p.add_argument("--requests", type=int, default=8, help="requests per arm per round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--complex-share", type=float, default=0.2)
    p.add_argument("--simple-max-tokens", type=int, default=16)
    p.add_argument("--complex-max-tokens", type=int, default=48)
    p.add_argument("--simple-budget-ms", type=int, default=2000, help="routed arm: latency_budget_ms of simple items")
    p.add_argument("--complex-budget-ms", type=int, default=30000, help="routed arm: latency_budget_ms of complex items")
    p.add_argument("--complex-min-accuracy", type=float, default=0.3, help="routed arm: min_accuracy of complex items (<0: unset)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--start-timeout", type=float, default=300.0, help="seconds to wait for the tiers")


def _resolve_model(model: str, override: str | None) -> str:
    if override:
        return override
    p = Path(model)
    return str(p if p.is_absolute() else h.REPO / p)


def start_mesh(out: Path, mesh: MeshConfig, model_override: str | None, timeout: float) -> list[tuple[TierSpec, ServerProcess]]:
    """Every tier of the mesh file on a free port (the file's addresses are placeholders), SERVING."""
    started = []
    try:
        for t in mesh.tiers:
            vllm = t.serve.engine == "vllm"
            model = _resolve_model(t.model, model_override) if vllm else (t.model or "fake")
            if vllm and not Path(model).exists():
                raise SystemExit(f"tier {t.name}: model folder {model} not found (make model, or --model DIR)")
            serve = t.serve.model_copy(update={"log_level": "WARNING"})
            spec = t.model_copy(update={"address": f"127.0.0.1:{h.free_port()}", "model": model, "serve": serve})
            started.append((spec, tier_process(spec, log=out / f"tier-{t.name}.log").start()))
        h.wait_all(*(s for _, s in started), timeout=timeout)
    except BaseException:
        h.stop_all(s for _, s in reversed(started))
        raise
    return started


def schedule(items: list[Item], args, seed: int) -> list[dict]:
    """n requests, complex with probability complex_share, Poisson arrivals at args.rate."""
    rng = random.Random(seed)
    simple = [i for i in items if not i.complex]
    hard = [i for i in items if i.complex] or simple
    simple = simple or hard
    t = 0.0
    plan = []
    for _ in range(args.requests):
        t += rng.expovariate(args.rate)
        item = rng.choice(hard if rng.random() < args.complex_share else simple)
        plan.append({"at_s": round(t, 4), "item": item})
    return plan


def requests_for(plan: list[dict], arm: str, precise: str, args) -> list[dict]:
    reqs = []
    for p in plan:
        item: Item = p["item"]
        max_tokens = item.max_tokens or (args.complex_max_tokens if item.complex else args.simple_max_tokens)
        r = {"at_s": p["at_s"], "messages": [{"role": "user", "content": item.prompt}], "max_tokens": max_tokens}
        if arm == "pinned":
            r["tier"] = precise
        elif item.complex:
            r["latency_budget_ms"] = args.complex_budget_ms
            if args.complex_min_accuracy >= 0:
                r["min_accuracy"] = args.complex_min_accuracy
        else:
            r["latency_budget_ms"] = args.simple_budget_ms
        reqs.append(r)
    return reqs


def costs(tiers: list[TierSpec], profiles_path: str | None) -> dict[str, float]:
    prof = {}
    if profiles_path:
        from router.profiles import load_profiles

        prof = {name: p.cost_per_million_tokens for name, p in load_profiles(profiles_path).tiers.items()}
    out = {}
    for t in tiers:
        if t.cost_per_million_tokens is not None:
            out[t.name] = t.cost_per_million_tokens
        elif prof.get(t.name):
            out[t.name] = prof[t.name]
        else:
            q = t.quantization.lower()
            out[t.name] = next((v for k, v in DEFAULT_COST.items() if k in q), 0.5)
    return out


def run(args) -> dict:
    out = h.Output("routing", args.out)
    try:
        mesh = load_mesh(args.mesh)
    except MeshConfigError as e:
        raise SystemExit(str(e)) from None
    eval_path = args.eval_set or (str(h.REPO / "evals") if (h.REPO / "evals").is_dir() and any((h.REPO / "evals").glob("*.jsonl")) else None)
    items, source = load_items(eval_path)
    precise = args.precise or mesh.tiers[0].name
    if precise not in {t.name for t in mesh.tiers}:
        raise SystemExit(f"--precise {precise}: no such tier in {args.mesh}")
    print(f"eval items: {len(items)} ({sum(i.complex for i in items)} complex) from {source}; pinned tier: {precise}", flush=True)
    arms = ("pinned", "routed")
    results: dict = {a: [] for a in arms}
    spans: dict = {a: [] for a in arms}
    servers: list = []
    try:
        lg = h.LoadGen(out.dir)
        servers.append(lg)
        tiers = start_mesh(out.dir, mesh, args.model, args.start_timeout)
        servers += [s for _, s in tiers]
        specs = [t for t, _ in tiers]
        router = h.start_router(out.dir, specs).wait_serving()
        servers.append(router)
        cost = costs(specs, args.profiles)
        # Warm-up: the router's first health answers, then one short request per tier.
        lg.until_ok(router.address, h.ROUTER_METHOD)
        for t in specs:
            lg.open_loop(router.address, [{"at_s": 0, "prompt": "Hello", "max_tokens": 4, "tier": t.name}], timeout=120)
        for r in range(args.rounds):
            plan = schedule(items, args, args.seed + r)
            for arm in h.rotated(arms, r):
                res = lg.open_loop(router.address, requests_for(plan, arm, precise, args),
                                   timeout=plan[-1]["at_s"] + 300)
                for p, x in zip(plan, res["results"]):
                    x.update(item=p["item"].id, complex=p["item"].complex,
                             correct=("error" not in x) and p["item"].correct(x.get("text", "")))
                results[arm] += res["results"]
                spans[arm].append(max((x.get("done_s", 0) for x in res["results"]), default=0.0))
                ok = [x for x in res["results"] if "error" not in x]
                print(f"  round {r + 1} {arm}: {len(ok)}/{len(plan)} ok, tiers {dict(Counter(x.get('tier') for x in ok))}", flush=True)
    finally:
        h.stop_all(reversed(servers))

    stats = {}
    for arm in arms:
        rs = results[arm]
        ok = [x for x in rs if "error" not in x]
        span = sum(spans[arm]) or float("nan")
        tokens = sum(x.get("completion_tokens", 0) for x in ok)
        simple_items = [x for x in rs if not x["complex"]]
        complex_items = [x for x in rs if x["complex"]]
        acc = lambda xs: 100.0 * sum(x["correct"] for x in xs) / len(xs) if xs else float("nan")
        stats[arm] = {
            "requests": len(rs), "completed": len(ok), "errors": dict(Counter(x["error"] for x in rs if "error" in x)),
            "latency": h.summary_ms([x["total_s"] for x in ok]), "ttft": h.summary_ms([x["ttft_s"] for x in ok if "ttft_s" in x]),
            "throughput_rps": len(ok) / span, "tokens_per_s": tokens / span,
            "accuracy": acc(rs), "accuracy_simple": acc(simple_items), "accuracy_complex": acc(complex_items),
            "cost": sum((x.get("prompt_tokens", 0) + x.get("completion_tokens", 0)) * cost.get(x.get("tier"), 0.0)
                        for x in ok) / 1e6,
            "tiers": dict(Counter(x.get("tier") for x in ok)),
        }
    p, q = stats["pinned"], stats["routed"]
    ratio = lambda a, b: a / b if b else float("nan")
    stats["routed_vs_pinned"] = {
        "p50_ratio": ratio(q["latency"]["p50"], p["latency"]["p50"]), "p95_ratio": ratio(q["latency"]["p95"], p["latency"]["p95"]),
        "throughput_ratio": ratio(q["throughput_rps"], p["throughput_rps"]),
        "tokens_per_s_ratio": ratio(q["tokens_per_s"], p["tokens_per_s"]),
        "accuracy_diff_pt": q["accuracy"] - p["accuracy"], "cost_ratio": ratio(q["cost"], p["cost"]),
    }
    rows = []
    for arm in arms:
        s = stats[arm]
        rows.append([arm, f"{s['completed']}/{s['requests']}", s["latency"]["p50"], s["latency"]["p95"], s["ttft"]["p50"],
                     s["ttft"]["p95"], s["throughput_rps"], s["tokens_per_s"], s["accuracy"], s["accuracy_simple"],
                     s["accuracy_complex"], f"{s['cost'] * 1e3:.4f}",
                     " ".join(f"{k}:{v}" for k, v in sorted(s["tiers"].items(), key=str))])
    rv = stats["routed_vs_pinned"]
    f2 = lambda x: f"{x:.2f}"
    rows.append(["routed/pinned", "", f2(rv["p50_ratio"]), f2(rv["p95_ratio"]), "", "", f2(rv["throughput_ratio"]),
                 f2(rv["tokens_per_s_ratio"]), f"{rv['accuracy_diff_pt']:+.1f} pt", "", "", f"×{rv['cost_ratio']:.2f}", ""])
    out.result.update(stats=stats, results=results, eval_source=source, precise=precise, cost_per_million=cost,
                      mesh=mesh.model_dump(mode="json", exclude_defaults=True), params={k: v for k, v in vars(args).items() if k != "func"})
    out.print_table(
        "routing",
        f"Routed versus pinned to {precise} ({args.requests} requests × {args.rounds} rounds per arm, Poisson {args.rate:g}/s, "
        f"{100 * args.complex_share:.0f} % complex; mesh {Path(args.mesh).name})",
        ["arm", "ok", "latency p50 ms", "latency p95 ms", "TTFT p50 ms", "TTFT p95 ms", "req/s", "tokens/s",
         "accuracy %", "simple %", "complex %", "cost (m$)", "tiers"], rows, 1)

    def draw(plt):
        fig, ax = plt.subplots(figsize=(6, 4))
        for arm in arms:
            lat = sorted(x["total_s"] * 1e3 for x in results[arm] if "error" not in x)
            ax.plot(lat, [(i + 1) / len(lat) for i in range(len(lat))], label=arm)
        ax.set_xlabel("end-to-end latency, ms")
        ax.set_ylabel("fraction of requests")
        ax.set_title("Latency CDF, routed versus pinned")
        ax.legend()
        return fig

    out.result["plots"] = [out.plot("latency_cdf.png", draw)]
    out.save()
    return out.result
