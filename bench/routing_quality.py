"""Routing quality, offline: how well each router picks tiers, replayed on the profiler's per-item outcomes.

No tier runs: every tier already answered every eval item (profiles/outcomes.jsonl, written by
`qarr profile`), so a router's choice for an item determines its correctness, tokens and latency.
The learned predictor is scored on held-out items only: k-fold by item (each item's prediction
comes from a predictor trained on the other folds, with its own cross-validated penalty).

Routers: random (uniform over the tiers), keyword (today's policy: the complexity classifier's class
defaults and each tier's profiled accuracy), learned (the same policy with the predictor's per-request
accuracy), oracle (the cheapest tier that answers the item correctly), and each tier alone. For each:
accuracy, mean cost per request (profiled $/1M tokens x prompt + completion tokens), mean and p95
latency (the item's own, measured one request at a time), share per tier. Between the cheapest and the
most accurate tier: APGR, CPT(50 %), CPT(80 %) from each router's score swept over every threshold
(bench/pgr.py). Plots: cost vs accuracy (every router and tier, with the sweeps) and accuracy vs share
of strong calls. The predictor's cost per request on the router's hot path is measured too.
"""

from __future__ import annotations

import argparse
import random
import time
from collections import Counter
from pathlib import Path

from bench import harness as h
from bench.pgr import Point, apgr, cpt, pgr, sweep
from mesh.config import load_mesh
from profiler.evaluate import EVAL_MAX_TOKENS
from profiler.outcomes import Example, examples, load_outcomes, tiers_of
from profiler.stats import percentile
from profiler.train import folds_of, fit_predictor
from router.choose import LiveState, RequestView, choose_tier
from router.classify import Signals, classify
from router.profiles import load_profiles

CLASS_SCORE = {"fast": 0.0, "balanced": 1.0, "precise": 2.0}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--outcomes", default=str(h.REPO / "profiles/outcomes.jsonl"), help="per-item outcomes (qarr profile)")
    p.add_argument("--profiles", default=str(h.REPO / "profiles/default.yaml"),
                   help="profiles: cost per 1M tokens, and the latency model the policy routes on")
    p.add_argument("--mesh", default=str(h.REPO / "mesh.yaml"), help="tiers and routing policy (default %(default)s)")
    p.add_argument("--folds", type=int, default=5, help="k of the k-fold split by item (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="fold assignment and the random router (default %(default)s)")
    p.add_argument("--weak", help="weak tier of the APGR pair (default: the cheapest per request)")
    p.add_argument("--strong", help="strong tier of the APGR pair (default: the most accurate)")
    p.add_argument("--timing-runs", type=int, default=20, help="passes over the prompts when timing the predictor")


def _policy_choice(ex: Example, specs, profiles, policy, accuracy=None) -> str:
    """What choose_tier picks for the item on an idle mesh (no queue, every tier serving)."""
    text = ex.prompt
    view = RequestView(
        max_tokens=EVAL_MAX_TOKENS,
        prompt_tokens={t.name: ex.outcomes[t.name].prompt_tokens for t in specs},
        complexity=classify(Signals(text, len(text.encode()), EVAL_MAX_TOKENS, 0.0)),
        accuracy=accuracy,
    )
    live = {t.name: LiveState(serving=True) for t in specs}
    return choose_tier(view, specs, profiles.tiers, live, policy)[0].name


def out_of_fold(data: list[Example], tiers: list[str], k: int, seed: int) -> list[dict[str, float]]:
    """Each item's predicted accuracy per tier from a predictor that never saw it."""
    fold = folds_of([e.item for e in data], k, seed)
    predicted: list[dict[str, float] | None] = [None] * len(data)
    for f in range(k):
        train = [e for e, g in zip(data, fold) if g != f]
        predictor = fit_predictor(train, tiers, seed=seed)
        for i, (e, g) in enumerate(zip(data, fold)):
            if g == f:
                predicted[i] = predictor.predict(e.prompt)
    return predicted  # type: ignore[return-value]


def time_predictor(data: list[Example], tiers: list[str], runs: int) -> dict:
    """Microseconds per predict() on the eval prompts and on a 4 KiB prompt (the router's hot-path cost)."""
    predictor = fit_predictor(data, tiers)
    prompts = [e.prompt for e in data]
    long = ("Here is some context for the question that follows. " * 80)[:4096] + prompts[0]
    out = {}
    for name, texts in (("eval prompts", prompts), ("4 KiB prompt", [long] * len(prompts))):
        samples = []
        for _ in range(max(1, runs)):
            for t in texts:
                t0 = time.perf_counter_ns()
                predictor.predict(t)
                samples.append((time.perf_counter_ns() - t0) / 1000)
        out[name] = {"n": len(samples), "p50_us": percentile(samples, 50), "p99_us": percentile(samples, 99)}
    return out


def run(args) -> dict:
    out = h.Output("routing-quality", args.out)
    outcomes = load_outcomes(args.outcomes)
    config = load_mesh(args.mesh)
    profiles = load_profiles(args.profiles)
    known = {t.name for t in config.tiers}
    tiers = [t for t in tiers_of(outcomes) if t in known and t in profiles.tiers]
    if not tiers:
        raise SystemExit(f"no tier is in the outcomes, the mesh file and the profiles ({sorted(known)})")
    specs = [config.tier(t) for t in tiers]
    data = examples(outcomes, tiers)
    n = len(data)
    price = {t: config.tier(t).cost_per_million_tokens or profiles.tiers[t].cost_per_million_tokens for t in tiers}
    cost = {t: [price[t] * (e.outcomes[t].prompt_tokens + e.outcomes[t].completion_tokens) / 1e6 for e in data]
            for t in tiers}
    accuracy = {t: sum(e.correct(t) for e in data) / n for t in tiers}
    strong = args.strong or max(tiers, key=lambda t: (accuracy[t], -sum(cost[t])))
    weak = args.weak or min((t for t in tiers if t != strong), key=lambda t: sum(cost[t]), default=strong)
    print(f"{n} items x {len(tiers)} tiers from {args.outcomes} ({outcomes[0].eval_set}); weak {weak}, strong {strong}; "
          f"{args.folds}-fold", flush=True)

    predicted = out_of_fold(data, tiers, args.folds, args.seed)
    rng = random.Random(args.seed)
    cheapest_first = sorted(tiers, key=lambda t: sum(cost[t]))
    choices = {
        "random": [rng.choice(tiers) for _ in data],
        "keyword (today's policy)": [_policy_choice(e, specs, profiles, config.policy) for e in data],
        "learned": [_policy_choice(e, specs, profiles, config.policy, p) for e, p in zip(data, predicted)],
        "oracle": [next((t for t in cheapest_first if e.correct(t)), cheapest_first[0]) for e in data],
        **{f"only {t}": [t] * n for t in tiers},
    }
    scores = {
        "random": [0.0] * n,
        "keyword (today's policy)": [CLASS_SCORE[classify(Signals(e.prompt, len(e.prompt.encode()), EVAL_MAX_TOKENS, 0.0))]
                                     for e in data],
        "learned": [p[strong] - p[weak] for p in predicted],
        "oracle": [float(e.correct(strong)) - float(e.correct(weak)) for e in data],
    }

    stats: dict = {}
    for name, chosen in choices.items():
        lat = [e.outcomes[t].latency_ms for e, t in zip(data, chosen)]
        stats[name] = {
            "accuracy": 100 * sum(e.correct(t) for e, t in zip(data, chosen)) / n,
            "cost_per_request": sum(cost[t][i] for i, t in enumerate(chosen)) / n,
            "latency_mean_ms": sum(lat) / n, "latency_p95_ms": percentile(lat, 95),
            "share": {t: c / n for t, c in Counter(chosen).items()},
        }
    w_acc, s_acc = accuracy[weak], accuracy[strong]
    curves: dict[str, list[Point]] = {}
    for name, sc in scores.items():
        curve = sweep(sc, [e.correct(weak) for e in data], [e.correct(strong) for e in data], cost[weak], cost[strong])
        curves[name] = curve
        stats[name].update(apgr=apgr(curve, w_acc, s_acc), cpt50=cpt(curve, w_acc, s_acc, 0.5),
                           cpt80=cpt(curve, w_acc, s_acc, 0.8),
                           pgr_at_operating_point=pgr(stats[name]["accuracy"] / 100, w_acc, s_acc))
    timing = time_predictor(data, tiers, args.timing_runs)

    rows = []
    for name, s in stats.items():
        pct = lambda v: "–" if v is None or v != v else f"{100 * v:.1f} %"
        rows.append([name, s["accuracy"], f"{s['cost_per_request'] * 1e6:.3f}", s["latency_mean_ms"], s["latency_p95_ms"],
                     " ".join(f"{t}:{100 * v:.0f}%" for t, v in sorted(s["share"].items())),
                     "" if "apgr" not in s else f"{s['apgr']:.3f}", pct(s.get("cpt50")) if "apgr" in s else "",
                     pct(s.get("cpt80")) if "apgr" in s else ""])
    out.print_table(
        "routing_quality",
        f"Routing quality on {n} held-out eval items ({args.folds}-fold; {outcomes[0].eval_set}), {len(tiers)} tiers; "
        f"APGR/CPT between {weak} (weak) and {strong} (strong)",
        ["router", "accuracy %", "cost / request (µ$)", "latency mean ms", "latency p95 ms", "share per tier",
         "APGR", "CPT(50%)", "CPT(80%)"], rows, 1)
    out.print_table(
        "predictor_cost", "Accuracy predictor cost per request (router hot path, this process)",
        ["prompts", "calls", "p50 µs", "p99 µs"],
        [[k, v["n"], v["p50_us"], v["p99_us"]] for k, v in timing.items()], 1)
    out.result.update(stats=stats, timing_us=timing, weak=weak, strong=strong, tiers=tiers, items=n, folds=args.folds,
                      eval_set=outcomes[0].eval_set, eval_set_sha256=outcomes[0].eval_set_sha256,
                      curves={k: [vars(p) for p in v] for k, v in curves.items()},
                      params={k: v for k, v in vars(args).items() if k != "func"})

    def cost_accuracy(plt):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for name, curve in curves.items():
            ax.plot([p.cost * 1e6 for p in curve], [100 * p.accuracy for p in curve], lw=1,
                    label=f"{name} sweep {weak}→{strong}")
        for name, s in stats.items():
            marker = "s" if name.startswith("only ") else "o"
            ax.scatter(s["cost_per_request"] * 1e6, s["accuracy"], marker=marker, s=50, zorder=3)
            ax.annotate(name, (s["cost_per_request"] * 1e6, s["accuracy"]), textcoords="offset points", xytext=(5, 4),
                        fontsize=8)
        ax.set_xlabel("mean cost per request (µ$)")
        ax.set_ylabel("accuracy on held-out items (%)")
        ax.set_title("Cost vs accuracy: routers (dots), single tiers (squares)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
        return fig

    def share_accuracy(plt):
        fig, ax = plt.subplots(figsize=(6, 4))
        for name, curve in curves.items():
            ax.plot([100 * p.share for p in curve], [100 * p.accuracy for p in curve], label=name)
        ax.axhline(100 * w_acc, ls="--", c="grey", label=f"{weak} alone")
        ax.axhline(100 * s_acc, ls="--", c="red", label=f"{strong} alone")
        ax.set_xlabel(f"calls to {strong} (%)")
        ax.set_ylabel("accuracy (%)")
        ax.set_title("Accuracy vs share of strong calls (threshold sweep)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        return fig

    out.result["plots"] = [out.plot("cost_accuracy.png", cost_accuracy), out.plot("strong_share.png", share_accuracy)]
    out.save()
    return out.result
