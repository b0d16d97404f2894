"""Profile every tier of a mesh: start (or find) each tier, measure it, gate it, build the Profiles."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import platform
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from launcher.process import is_serving, tier_process
from profiler.cost import cost_per_million_tokens
from profiler.evalset import DEFAULT_EVAL_SET, EvalItem, file_sha256, load_eval_set, sample
from profiler.evaluate import EvalResult, evaluate
from profiler.gate import apply_gate, default_reference
from profiler.measure import Speed, TierProbe
from profiler.memory import PeakMemorySampler, pid_listening_on
from mesh.config import ClientTLS, split_address
from profiler.outcomes import Outcome
from profiler.stats import percentile
from profiler.tiers import TierSpec
from profiler.tokens import tokens_per_word
from router.profiles import SCHEMA_VERSION, Profiles, TierProfile

console = Console(stderr=True)


@dataclass
class ProfileSettings:
    eval_set: Path = DEFAULT_EVAL_SET
    eval_limit: int | None = None  # all items
    eval_concurrency: int = 1
    ttft_requests: int = 10
    decode_tokens: int = 64
    concurrency_levels: tuple[int, ...] = (1, 4, 8)
    prompt_tokens: int = 480
    price_per_hour: float = 0.10
    gate_points: float = 10.0
    reference: str | None = None
    start_tiers: bool = True
    start_timeout_s: float = 300.0
    log_dir: Path = Path(".cache/profile-logs")
    tls: ClientTLS | None = None  # the mesh's upstream_tls: tiers that serve TLS are called as the router calls them

    @property
    def concurrency_n(self) -> int:
        return max(self.concurrency_levels)


@dataclass
class TierMeasurement:
    spec: TierSpec
    speed: Speed
    peak_memory_bytes: int
    evals: EvalResult
    tokens_per_word: float
    start_s: float = 0.0

    @property
    def by_category(self) -> dict[str, float]:
        return self.evals.by_category()

    def outcomes(self, eval_set: str, eval_set_sha256: str) -> list[Outcome]:
        """This tier's outcome on every eval item, as profiles/outcomes.jsonl stores them."""
        return [
            Outcome(tier=self.spec.name, item=r.item.id, category=r.item.category, prompt=r.item.prompt,
                    correct=r.correct, prompt_tokens=r.completion.prompt_tokens,
                    completion_tokens=r.completion.completion_tokens, ttft_ms=round(r.completion.ttft_s * 1000, 2),
                    latency_ms=round(r.completion.total_s * 1000, 2), output=r.completion.text, eval_set=eval_set,
                    eval_set_sha256=eval_set_sha256)
            for r in self.evals.items
        ]


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=False)


async def _measure_speed(probe: TierProbe, s: ProfileSettings, progress: Progress, name: str) -> Speed:
    steps = 2 + s.ttft_requests + len([c for c in s.concurrency_levels if c > 1]) + 1
    task = progress.add_task(f"{name}: latency/throughput", total=steps)
    await probe.sequential(2, 8)  # warm-up: first requests pay one-time costs
    progress.advance(task, 2)
    runs = await probe.sequential(s.ttft_requests, s.decode_tokens, on_done=lambda: progress.advance(task))
    ttfts = [r.ttft_s * 1000 for r in runs]
    c1_tps = [r.decode_tps for r in runs]
    by_conc = {1: sum(r.completion_tokens for r in runs) / sum(r.total_s for r in runs)}
    for n in s.concurrency_levels:
        if n > 1:
            by_conc[n] = await probe.concurrent_tps(n, s.decode_tokens)
            progress.advance(task)
    prompt_tps = await probe.prompt_tps(s.prompt_tokens)
    progress.advance(task)
    return Speed(
        ttft_ms_p50=percentile(ttfts, 50),
        ttft_ms_p95=percentile(ttfts, 95),
        decode_tps_c1=sorted(c1_tps)[len(c1_tps) // 2],
        decode_tps_by_concurrency=by_conc,
        prompt_tps=prompt_tps,
    )


async def _measure_accuracy(probe: TierProbe, items: list[EvalItem], s: ProfileSettings, progress: Progress,
                            name: str) -> EvalResult:
    task = progress.add_task(f"{name}: eval ({len(items)} items)", total=len(items))
    return await evaluate(probe.stub, items, concurrency=s.eval_concurrency, on_done=lambda: progress.advance(task))


def _tier_tls(spec: TierSpec, s: ProfileSettings) -> ClientTLS | None:
    """How to call a tier: as the router does (upstream_tls) when it serves TLS, else plaintext."""
    return (s.tls or ClientTLS()) if spec.serve.tls else None


async def _measure(spec: TierSpec, items: list[EvalItem], s: ProfileSettings, progress: Progress,
                   speed: bool) -> tuple[Speed | None, EvalResult]:
    probe = TierProbe(replica_address(spec), _tier_tls(spec, s))
    try:
        measured = await _measure_speed(probe, s, progress, spec.name) if speed else None
        if measured:
            console.print(f"[bold]{spec.name}[/]: TTFT p50 {measured.ttft_ms_p50:.0f} ms, decode "
                          f"{measured.decode_tps_c1:.1f} tok/s (1 stream), prefill {measured.prompt_tps:.0f} tok/s")
        evals = await _measure_accuracy(probe, items, s, progress, spec.name)
        console.print(f"[bold]{spec.name}[/]: accuracy {evals.accuracy:.3f} ({evals.correct}/{evals.total})")
        return measured, evals
    finally:
        await probe.close()


def replica_address(spec: TierSpec) -> str:
    """The replica a tier is profiled on: its first listed address (replicas of a tier are alike)."""
    if not spec.static_addresses:
        raise SystemExit(f"tier {spec.name}: a dns tier cannot be profiled here; list an address for it")
    return spec.static_addresses[0]


def measure_tier(spec: TierSpec, items: list[EvalItem], s: ProfileSettings, progress: Progress,
                 speed: bool = True) -> TierMeasurement:
    """Start the tier (or use the running one), measure it while sampling its memory, stop it."""
    tls = _tier_tls(spec, s)
    started, start_s = None, 0.0
    address = replica_address(spec)
    if s.start_tiers:
        if is_serving(address, tls=tls):
            raise SystemExit(f"tier {spec.name}: something already serves {address}; "
                             "use --running to profile running tiers")
        console.print(f"[bold]{spec.name}[/]: starting tier server ({spec.quantization}, {spec.model})")
        started = tier_process(spec, log=s.log_dir / f"{spec.name}.log", tls=s.tls).start()
        try:
            started.wait_serving(s.start_timeout_s, poll_s=0.5)
        except BaseException:  # Ctrl-C while it starts: stop it too
            started.stop()
            raise
        start_s = time.monotonic() - started.started_at
        pid = started.pid
        console.print(f"[bold]{spec.name}[/]: SERVING after {start_s:.0f} s")
    else:
        if not is_serving(address, tls=tls):
            raise SystemExit(f"tier {spec.name}: nothing SERVING at {address} (drop --running to start it)")
        pid = pid_listening_on(split_address(address)[1])
    try:
        with PeakMemorySampler(pid) as mem:
            sp, evals = asyncio.run(_measure(spec, items, s, progress, speed))
    finally:
        if started:
            started.stop()
    return TierMeasurement(spec=spec, speed=sp, peak_memory_bytes=mem.peak_bytes, evals=evals,
                           tokens_per_word=_tokens_per_word(spec.model), start_s=start_s)


def _tokens_per_word(model: str) -> float:
    try:
        return tokens_per_word(model)
    except Exception as exc:  # a hub id or a folder without tokenizer.json
        console.print(f"[yellow]tokens per word: {exc}; using 1.3[/]")
        return 1.3


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    gpu = "no GPU"
    if shutil.which("nvidia-smi"):
        try:
            gpu = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                                 text=True, timeout=10).stdout.strip().replace("\n", ", ") or gpu
        except (OSError, subprocess.TimeoutExpired):
            pass
    return f"{os.cpu_count()} cores {platform.machine()} ({cpu}), {mem_gib:.0f} GiB RAM, {gpu}"


def build_profiles(results: list[TierMeasurement], s: ProfileSettings, eval_items: int) -> Profiles:
    labels = {r.spec.name: r.spec.quantization for r in results}
    reference = s.reference or default_reference(labels)
    gates = apply_gate({r.spec.name: r.evals.accuracy for r in results}, reference, s.gate_points)
    tiers = {}
    for r in results:
        sp, gate = r.speed, gates[r.spec.name]
        n = s.concurrency_n
        tiers[r.spec.name] = TierProfile(
            ttft_ms_p50=round(sp.ttft_ms_p50, 1),
            ttft_ms_p95=round(sp.ttft_ms_p95, 1),
            decode_tps_c1=round(max(sp.decode_tps_c1, 0.01), 2),
            decode_tps_cn=round(sp.decode_tps_by_concurrency.get(n, 0.0), 2),
            concurrency_n=n,
            prompt_tps=round(sp.prompt_tps, 1),
            peak_memory_bytes=int(r.peak_memory_bytes),
            accuracy=round(r.evals.accuracy, 4),
            tokens_per_word=round(r.tokens_per_word, 3),
            cost_per_million_tokens=round(
                cost_per_million_tokens(s.price_per_hour, sp.decode_tps_by_concurrency.get(n, sp.decode_tps_c1)), 4),
            routable=gate.passed,
            not_routable_reason=gate.reason,
        )
    measured = {
        "date": dt.date.today().isoformat(),
        "machine": machine_description(),
        "tool": "qarr profile (python -m profiler)",
        "eval_set": f"{s.eval_set.name} sha256:{file_sha256(s.eval_set)[:16]}",
        "eval_items": str(eval_items),
        "reference_tier": reference,
        "gate_max_drop_points": f"{s.gate_points:g}",
        "price_per_hour_usd": f"{s.price_per_hour:g}",
        "cost_basis": f"decode tokens/s at concurrency {s.concurrency_n}",
        "load_average_1m_at_end": f"{os.getloadavg()[0]:.1f}",
    }
    return Profiles(version=SCHEMA_VERSION, measured=measured, tiers=tiers)


def profile_tiers(specs: list[TierSpec], s: ProfileSettings) -> tuple[Profiles, list[TierMeasurement]]:
    items = sample(load_eval_set(s.eval_set), s.eval_limit)
    results = []
    with _progress() as progress:
        for spec in specs:
            results.append(measure_tier(spec, items, s, progress))
    return build_profiles(results, s, len(items)), results
