"""Routing benefit, online: QARR's routing versus every request pinned to the most accurate tier, on real tiers.

A workload of eval items (the golden set by default) arrives as a Poisson process at --rate; both
arms replay the same schedule in a round, the arms alternated round by round. pinned: routing.tier =
the most accurate tier (by the profiles' accuracy, or --precise). routed: no hints; the router's
policy decides, with a per-request accuracy predictor when the eval set's per-item outcomes exist.

Held out: that predictor is trained here on the outcomes of the items outside one fold (the folds of
`bench routing-quality`), and the workload draws only from that fold, so the routed arm never serves
an item its predictor saw. Reports p50/p95 latency, TTFT, throughput, accuracy (the profiler's scorer,
errors count as wrong), cost (tokens x the tier's $/1M tokens) and the share served by each tier.
Tiers come from a mesh file (--mesh); the same command runs on a GPU with a GPU mesh file.
"""

from __future__ import annotations

import argparse
import random
from collections import Counter
from pathlib import Path

from bench import harness as h
from launcher.process import ServerProcess, tier_process
from mesh.config import MeshConfig, MeshConfigError, TierSpec, load_mesh
from profiler.evalset import DEFAULT_EVAL_SET, EvalItem, file_sha256, load_eval_set
from profiler.evaluate import EVAL_MAX_TOKENS
from profiler.outcomes import examples, load_outcomes
from profiler.scorer import score
from profiler.train import folds_of, train_predictor
from router.predictor import dump_predictor
from router.profiles import dump_profiles, load_profiles

# Relative cost per million tokens when neither the mesh file nor a profiles file says.
DEFAULT_COST = {"fp32": 1.0, "bf16": 0.5, "fp16": 0.5, "fp8": 0.3, "w8a8": 0.3, "int8": 0.3, "awq": 0.2,
                "gptq": 0.2, "w4a16": 0.2}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mesh", default=str(h.REPO / "bench/meshes/cpu-two-models.yaml"),
                   help="mesh file of the tiers to start (see bench/meshes/; default: the bundled two-model mesh, "
                        "SmolLM2-135M and Gemma 3 270M on CPU); addresses are replaced by free ports")
    p.add_argument("--model", help="model folder for every vLLM tier (overrides the mesh file's)")
    p.add_argument("--precise", help="the tier the pinned arm uses (default: the most accurate in the profiles)")
    p.add_argument("--eval-set", type=Path, default=DEFAULT_EVAL_SET, help="JSONL eval set (default: the golden set)")
    p.add_argument("--profiles", default=str(h.REPO / "profiles/default.yaml"),
                   help="profiles file (router/profiles.py schema) the router routes on; also gives cost per million tokens")
    p.add_argument("--outcomes", help="per-item outcomes of the eval set (default: outcomes.jsonl beside --profiles); "
                   "without them the routed arm uses the profiled accuracies and every item")
    p.add_argument("--folds", type=int, default=5, help="folds of the item split (default %(default)s)")
    p.add_argument("--fold", type=int, default=0, help="the held-out fold the workload draws from (default %(default)s)")
    # Defaults sized to finish in minutes on the 2-core CPU tiers; raise them on a GPU.
    p.add_argument("--rate", type=float, default=0.5, help="Poisson arrival rate, requests/s")
    p.add_argument("--requests", type=int, default=8, help="requests per arm per round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--max-tokens", type=int, default=EVAL_MAX_TOKENS,
                   help="max_tokens of every request (default: the profiler's eval, %(default)s)")
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
            # No /metrics ports: a mesh file's fixed ones would collide with a running mesh's.
            serve = t.serve.model_copy(update={"log_level": "WARNING", "metrics_port": None})
            spec = t.model_copy(update={"address": f"127.0.0.1:{h.free_port()}", "model": model, "serve": serve})
            started.append((spec, tier_process(spec, log=out / f"tier-{t.name}.log", tls=mesh.upstream_tls).start()))
        h.wait_all(*(s for _, s in started), timeout=timeout)
    except BaseException:
        h.stop_all(s for _, s in reversed(started))
        raise
    return started


def schedule(items: list[EvalItem], args, seed: int) -> list[dict]:
    """args.requests items drawn with replacement, Poisson arrivals at args.rate."""
    rng = random.Random(seed)
    t = 0.0
    plan = []
    for _ in range(args.requests):
        t += rng.expovariate(args.rate)
        plan.append({"at_s": round(t, 4), "item": rng.choice(items)})
    return plan


def requests_for(plan: list[dict], arm: str, precise: str, max_tokens: int) -> list[dict]:
    reqs = []
    for p in plan:
        r = {"at_s": p["at_s"], "messages": [{"role": "user", "content": p["item"].prompt}], "max_tokens": max_tokens}
        if arm == "pinned":
            r["tier"] = precise
        reqs.append(r)
    return reqs


def held_out(items: list[EvalItem], args, out_dir: Path) -> tuple[list[EvalItem], str, str]:
    """(workload items, profiles file for the router, how the routed arm predicts accuracy)."""
    profiles = load_profiles(args.profiles)
    outcomes_path = Path(args.outcomes) if args.outcomes else Path(args.profiles).parent / "outcomes.jsonl"
    sha = file_sha256(args.eval_set)
    outcomes = load_outcomes(outcomes_path) if outcomes_path.exists() else []
    tiers = [t for t in profiles.tiers if any(o.tier == t for o in outcomes)]
    if not outcomes or outcomes[0].eval_set_sha256 != sha or not tiers:
        profiles.predictor = ""
        path = out_dir / "profiles.yaml"
        dump_profiles(profiles, path)
        return items, str(path), "profiled accuracy (no per-item outcomes of this eval set)"
    data = examples(outcomes, tiers)
    fold = dict(zip([e.item for e in data], folds_of([e.item for e in data], args.folds)))
    train = [e for e in data if fold[e.item] != args.fold]
    test_ids = {e.item for e in data if fold[e.item] == args.fold}
    predictor = train_predictor(train, tiers, eval_set=outcomes[0].eval_set, eval_set_sha256=sha)
    dump_predictor(predictor, out_dir / "predictor.json")
    profiles.predictor = "predictor.json"
    path = out_dir / "profiles.yaml"
    dump_profiles(profiles, path)
    predictor_id = load_profiles(path).accuracy_predictor.id
    how = (f"learned predictor {predictor_id} trained on {len(train)} items; workload from the "
           f"{len(test_ids)} held-out items of fold {args.fold}/{args.folds}")
    return [i for i in items if i.id in test_ids], str(path), how


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
    items, profiles_path, how = held_out(load_eval_set(args.eval_set), args, out.dir)
    if not items:
        raise SystemExit(f"no eval items in the held-out fold {args.fold} of {args.eval_set}")
    profiles = load_profiles(profiles_path)
    names = [t.name for t in mesh.tiers]
    # The most accurate tier in the profiles (ties and tiers without a profile: mesh order).
    precise = args.precise or max(names, key=lambda n: profiles.tiers[n].accuracy if n in profiles.tiers else -1.0)
    if precise not in names:
        raise SystemExit(f"--precise {precise}: no such tier in {args.mesh}")
    print(f"{len(items)} eval items from {args.eval_set.name}; pinned tier: {precise}; routed arm: {how}", flush=True)
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
        upstream = {"upstream_tls": mesh.upstream_tls.model_dump(mode="json")} if mesh.upstream_tls else {}
        router = h.start_router(out.dir, specs, profiles=profiles_path,
                                policy=mesh.policy.model_dump(mode="json"), **upstream).wait_serving()
        servers.append(router)
        cost = costs(specs, profiles_path)
        # Warm-up: the router's first health answers, then one short request per tier.
        lg.until_ok(router.address, h.ROUTER_METHOD)
        for t in specs:
            lg.open_loop(router.address, [{"at_s": 0, "prompt": "Hello", "max_tokens": 4, "tier": t.name}], timeout=120)
        for r in range(args.rounds):
            plan = schedule(items, args, args.seed + r)
            for arm in h.rotated(arms, r):
                res = lg.open_loop(router.address, requests_for(plan, arm, precise, args.max_tokens),
                                   timeout=plan[-1]["at_s"] + 300)
                for p, x in zip(plan, res["results"]):
                    x.update(item=p["item"].id, category=p["item"].category,
                             correct=("error" not in x) and score(p["item"], x.get("text", "")))
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
        acc = lambda xs: 100.0 * sum(x["correct"] for x in xs) / len(xs) if xs else float("nan")
        served = Counter(x.get("tier") for x in ok)
        stats[arm] = {
            "requests": len(rs), "completed": len(ok), "errors": dict(Counter(x["error"] for x in rs if "error" in x)),
            "latency": h.summary_ms([x["total_s"] for x in ok]), "ttft": h.summary_ms([x["ttft_s"] for x in ok if "ttft_s" in x]),
            "throughput_rps": len(ok) / span, "tokens_per_s": tokens / span, "accuracy": acc(rs),
            "accuracy_by_category": {c: acc([x for x in rs if x["category"] == c]) for c in sorted({x["category"] for x in rs})},
            "cost": sum((x.get("prompt_tokens", 0) + x.get("completion_tokens", 0)) * cost.get(x.get("tier"), 0.0)
                        for x in ok) / 1e6,
            "tiers": dict(served), "share": {t: n / len(ok) for t, n in served.items()} if ok else {},
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
                     s["ttft"]["p95"], s["throughput_rps"], s["tokens_per_s"], s["accuracy"], f"{s['cost'] * 1e3:.4f}",
                     " ".join(f"{k}:{100 * v:.0f}%" for k, v in sorted(s["share"].items(), key=str))])
    rv = stats["routed_vs_pinned"]
    f2 = lambda x: f"{x:.2f}"
    rows.append(["routed/pinned", "", f2(rv["p50_ratio"]), f2(rv["p95_ratio"]), "", "", f2(rv["throughput_ratio"]),
                 f2(rv["tokens_per_s_ratio"]), f"{rv['accuracy_diff_pt']:+.1f} pt", f"×{rv['cost_ratio']:.2f}", ""])
    out.result.update(stats=stats, results=results, eval_set=str(args.eval_set), routed_arm=how, precise=precise,
                      cost_per_million=cost, mesh=mesh.model_dump(mode="json", exclude_defaults=True),
                      params={k: v for k, v in vars(args).items() if k != "func"})
    out.print_table(
        "routing",
        f"Routed versus pinned to {precise} ({args.requests} requests × {args.rounds} rounds per arm, Poisson "
        f"{args.rate:g}/s, {len(items)} eval items, max_tokens {args.max_tokens}; mesh {Path(args.mesh).name}; "
        f"routed arm: {how})",
        ["arm", "ok", "latency p50 ms", "latency p95 ms", "TTFT p50 ms", "TTFT p95 ms", "req/s", "tokens/s",
         "accuracy %", "cost (m$)", "share per tier"], rows, 1)

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
