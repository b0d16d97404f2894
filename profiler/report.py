"""The human report of a profile run: a Markdown table and PNG plots (matplotlib; skipped when missing)."""

from __future__ import annotations

from pathlib import Path

from profiler.run import TierMeasurement
from router.profiles import Profiles


def table(profiles: Profiles) -> str:
    head = ("| Tier | TTFT p50 / p95 (ms) | decode tok/s, 1 stream | tok/s, N streams (N) | prompt tok/s | "
            "peak RSS (GiB) | accuracy | tokens/word | $ / 1M tokens | routable |")
    rows = [head, "|" + "---|" * 10]
    for name, t in profiles.tiers.items():
        routable = "yes" if t.routable else f"**no**: {t.not_routable_reason}"
        rows.append(f"| {name} | {t.ttft_ms_p50:.0f} / {t.ttft_ms_p95:.0f} | {t.decode_tps_c1:.1f} | "
                    f"{t.decode_tps_cn:.1f} ({t.concurrency_n}) | {t.prompt_tps:.0f} | "
                    f"{t.peak_memory_bytes / 1024**3:.2f} | {t.accuracy:.3f} | {t.tokens_per_word:.2f} | "
                    f"{t.cost_per_million_tokens:.3f} | {routable} |")
    return "\n".join(rows)


def plots(results: list[TierMeasurement], profiles: Profiles, out_dir: Path) -> list[Path]:
    """accuracy-vs-latency.png and throughput-vs-concurrency.png; [] when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    made = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, t in profiles.tiers.items():
        ax.scatter(t.ttft_ms_p50, t.accuracy, s=60, marker="o" if t.routable else "x")
        ax.annotate(name, (t.ttft_ms_p50, t.accuracy), textcoords="offset points", xytext=(6, 4))
    ax.set_xlabel("TTFT p50 (ms)")
    ax.set_ylabel("accuracy (eval set)")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title("Accuracy vs latency (x: not routable)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    made.append(out_dir / "accuracy-vs-latency.png")
    fig.savefig(made[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in results:
        curve = sorted(r.speed.decode_tps_by_concurrency.items())
        ax.plot([c for c, _ in curve], [v for _, v in curve], marker="o", label=r.spec.name)
    ax.set_xlabel("concurrent streams")
    ax.set_ylabel("generated tokens/s (all streams)")
    ax.set_title("Throughput vs concurrency")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    made.append(out_dir / "throughput-vs-concurrency.png")
    fig.savefig(made[-1], dpi=110)
    plt.close(fig)
    return made


def markdown(profiles: Profiles, results: list[TierMeasurement], images: list[Path], report_path: Path,
             command: str) -> str:
    m = profiles.measured
    lines = [
        "# Tier profiles",
        "",
        f"Measured **{m.get('date', '?')}** on **{m.get('machine', '?')}** with `{command}`.",
        "",
        f"Eval set {m.get('eval_set', '?')}, {m.get('eval_items', '?')} items, greedy (temperature 0, fixed seed). "
        f"Eval gate: reference tier `{m.get('reference_tier', '?')}`, at most {m.get('gate_max_drop_points', '?')} "
        f"points below it. Cost from ${m.get('price_per_hour_usd', '?')}/hour and {m.get('cost_basis', '?')}.",
        "",
        f"Machine load (1-minute load average) when the run ended: {m.get('load_average_1m_at_end', '?')}; "
        "on a shared CPU this explains most of the spread in TTFT and tok/s.",
        "",
        table(profiles),
        "",
        "TTFT and decode speed: sequential requests after two warm-up requests; decode tok/s excludes the first "
        "token. N streams: generated tokens of N requests started together / wall time. Prompt tok/s: prompt "
        "tokens / TTFT of a long prompt with one output token. Peak RSS: summed RSS of the tier's process tree "
        "(server, engine core; shared pages counted per process) sampled every 0.25 s while it was measured, "
        "plus GPU memory per nvidia-smi when there is a GPU.",
        "",
        "## Accuracy by category",
        "",
    ]
    cats = sorted({c for r in results for c in r.by_category})
    lines.append("| Tier | " + " | ".join(cats) + " | engine start (s) |")
    lines.append("|" + "---|" * (len(cats) + 2))
    for r in results:
        lines.append(f"| {r.spec.name} | " + " | ".join(f"{r.by_category.get(c, 0):.2f}" for c in cats)
                     + f" | {r.start_s:.0f} |")
    lines.append("")
    lines.append("## Throughput by concurrency (generated tokens/s, all streams)")
    lines.append("")
    levels = sorted({c for r in results for c in r.speed.decode_tps_by_concurrency})
    lines.append("| Tier | " + " | ".join(str(c) for c in levels) + " |")
    lines.append("|" + "---|" * (len(levels) + 1))
    for r in results:
        lines.append(f"| {r.spec.name} | " + " | ".join(f"{r.speed.decode_tps_by_concurrency.get(c, 0):.1f}"
                                                         for c in levels) + " |")
    if images:
        lines += ["", "## Plots", ""]
        for img in images:
            rel = img.relative_to(report_path.parent) if img.is_relative_to(report_path.parent) else img
            lines.append(f"![{img.stem}]({rel})")
    return "\n".join(lines) + "\n"


def write_report(profiles: Profiles, results: list[TierMeasurement], report_path: Path, command: str) -> list[Path]:
    report_path.parent.mkdir(parents=True, exist_ok=True)
    images = plots(results, profiles, report_path.parent)
    report_path.write_text(markdown(profiles, results, images, report_path, command))
    return [report_path, *images]
