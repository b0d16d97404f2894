"""HTTP door overhead, side by side in one run: added TTFT and CPU per request of QARR's OpenAI-compatible
door, of QARR's gRPC path, and of the LiteLLM proxy.

Arms (streaming, --max-tokens chunks a stream, closed loop at concurrency 1, alternated round by round
so drift on a shared machine cancels):
  direct-grpc   gRPC client -> instant fake tier                        (the QARR arms' baseline)
  qarr-grpc     gRPC client -> router, gRPC door -> that tier
  qarr-http     HTTP client -> router, HTTP door -> that tier           (the same router process)
  direct-http   HTTP client -> instant OpenAI-compatible backend        (LiteLLM's baseline)
  litellm       HTTP client -> LiteLLM proxy -> that backend
Added TTFT = the arm's TTFT p50 minus its baseline's (and the median of the per-round differences).
CPU per request = utime + stime of the proxy's process tree from /proc over the arm's runs, divided by
the requests completed. The load generator (bench/loadgen.py) is its own process: raw gRPC calls, and
a minimal keep-alive HTTP/1.1 client for the HTTP arms. No baseline shares both client and backend with
qarr-http, so its added TTFT is given against both direct arms (same backend: direct-grpc; same client:
direct-http); the goal is judged on the larger.
LiteLLM is installed into its own venv by the benchmark (--litellm-venv, default .venv-litellm; pip,
once), never into the project's: a benchmark-only install.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from bench import harness as h
from launcher.process import REPO, ServerProcess, free_port
from profiler.stats import percentile

ARMS = ("direct-grpc", "qarr-grpc", "qarr-http", "direct-http", "litellm")
BASELINE = {"qarr-grpc": "direct-grpc", "qarr-http": "direct-grpc", "litellm": "direct-http"}
# The HTTP door has no same-client, same-backend baseline: it is also shown against the HTTP client's direct call
# (same client, the instant OpenAI backend instead of the instant tier). Report the larger of the two.
ALSO = {"qarr-http": "direct-http"}
# 1.106.10 and later need certifi >= 2026.10.19, newer than this machine's package index has.
LITELLM_SPEC = "litellm[proxy]==1.106.0"
GOAL = 0.2  # the HTTP door adds at most this share of LiteLLM's TTFT and CPU


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--requests", type=int, default=200, help="requests per arm per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--max-tokens", type=int, default=16, help="chunks per stream")
    p.add_argument("--warmup", type=int, default=50, help="warm-up requests per arm")
    p.add_argument("--no-litellm", action="store_true", help="skip the LiteLLM arms (no install)")
    p.add_argument("--litellm-spec", default=LITELLM_SPEC, help="pip requirement for the LiteLLM venv (default %(default)s)")
    p.add_argument("--litellm-venv", default=str(REPO / ".venv-litellm"), help="LiteLLM's own venv (created when missing)")


class HttpServer(ServerProcess):
    """A measured HTTP server, started at once: SERVING means GET `health` answers 200."""

    def __init__(self, name: str, argv: list[str], port: int, health: str, log: Path, env: dict | None = None) -> None:
        super().__init__(name, argv, f"127.0.0.1:{port}", log=log, env=env, stop_timeout_s=15.0)
        self.port = port
        self.health = health
        self.start()

    def is_serving(self, timeout: float = 1.0) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.address}{self.health}", timeout=timeout) as r:
                return r.status == 200
        except OSError:
            return False


def tree_cpu_seconds(pid: int) -> float:
    """utime + stime of a process and all its descendants (LiteLLM may run workers), in seconds."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    family, frontier = {pid}, [pid]
    while frontier:
        kids = [p for p, parent in parents.items() if parent in frontier and p not in family]
        family.update(kids)
        frontier = kids
    total = 0.0
    for p in family:
        try:
            total += h.cpu_seconds(p)
        except OSError:
            pass
    return total


def ensure_litellm(venv: Path, spec: str) -> Path:
    """The LiteLLM proxy's executable in its own venv, installing it there first when missing."""
    exe = venv / "bin" / "litellm"
    if exe.exists():
        return exe
    print(f"installing {spec} into {venv} (benchmark only; a few minutes, once)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", spec], check=True)
    return exe


def start_litellm(out: Path, exe: Path, backend: str) -> HttpServer:
    port = free_port()
    config = out / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: fake\n"
        "    litellm_params: {model: openai/fake, api_base: 'http://" + backend + "/v1', api_key: unused}\n"
        "litellm_settings: {drop_params: true, telemetry: false}\n"
        # No auth on either proxy (the QARR door's is off too): same work per request.
        "general_settings: {dangerously_permit_weak_or_unset_master_key: true}\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    # Offline and quiet: the bundled model cost map, no telemetry, errors only.
    env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="ERROR", LITELLM_TELEMETRY="False")
    argv = [str(exe), "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
    return HttpServer("litellm", argv, port, "/health/liveliness", out / "litellm.log", env=env)


def _cpu(server) -> float:
    return tree_cpu_seconds(server.pid) if isinstance(server, HttpServer) else server.cpu_s()


def run(args) -> dict:
    out = h.Output("http", args.out)
    arms = tuple(a for a in ARMS if not (args.no_litellm and a in ("direct-http", "litellm")))
    servers: list = []
    samples = {a: {"ttft": [], "total": [], "errors": {}, "round_p50_ttft": [], "cpu_s": 0.0, "completed": 0} for a in arms}
    try:
        exe = None if args.no_litellm else ensure_litellm(Path(args.litellm_venv), args.litellm_spec)
        lg = h.LoadGen(out.dir)
        servers.append(lg)
        tier = h.start_fake_tier(out.dir, "instant")
        http_port = free_port()
        router = h.start_router(out.dir, [{"name": "instant", "address": tier.address}],
                                http={"enabled": True, "listen": f"127.0.0.1:{http_port}"})
        servers += [tier, router]
        proxy = {"qarr-grpc": router, "qarr-http": router}
        target = {"direct-grpc": tier.address, "qarr-grpc": router.address, "qarr-http": f"http://127.0.0.1:{http_port}/v1"}
        if exe is not None:
            backend_port = free_port()
            backend = HttpServer("openai backend", [sys.executable, "-m", "bench.openai_backend", "--port", str(backend_port)],
                                 backend_port, "/health", out.dir / "openai-backend.log")
            servers.append(backend)
            h.wait_all(backend)
            litellm = start_litellm(out.dir, exe, backend.address)
            servers.append(litellm)
            proxy["litellm"] = litellm
            target["direct-http"] = f"http://{backend.address}/v1"
            target["litellm"] = f"http://{litellm.address}/v1"
        h.wait_all(*(s for s in servers[1:]), timeout=180)

        def call(arm: str, n: int) -> dict:
            if arm.endswith("grpc"):
                method = h.TIER_METHOD if arm == "direct-grpc" else h.ROUTER_METHOD
                return lg.closed(target[arm], method, concurrency=1, requests=n, max_tokens=args.max_tokens)
            return lg.call({"cmd": "closed_http", "url": target[arm], "model": "fake" if arm == "litellm" else "auto",
                            "concurrency": 1, "requests": n, "max_tokens": args.max_tokens, "deadline_s": 300}, timeout=330)

        lg.until_ok(router.address, h.ROUTER_METHOD)
        for arm in arms:  # warm-up: connections, caches, LiteLLM's first-call imports
            res = call(arm, args.warmup)
            if res["completed"] == 0:
                raise RuntimeError(f"{arm}: warm-up failed: {res['errors']}")

        for r in range(args.rounds):
            for arm in h.rotated(arms, r):
                before = _cpu(proxy[arm]) if arm in proxy else 0.0
                res = call(arm, args.requests)
                s = samples[arm]
                if arm in proxy:
                    s["cpu_s"] += _cpu(proxy[arm]) - before
                s["ttft"] += res["ttft"]
                s["total"] += res["total"]
                s["completed"] += res["completed"]
                s["round_p50_ttft"].append(percentile(res["ttft"], 50))
                for k, v in res["errors"].items():
                    s["errors"][k] = s["errors"].get(k, 0) + v
            print(f"  round {r + 1}/{args.rounds} done", flush=True)
    finally:
        h.stop_all(reversed(servers))

    stats = {}
    for a in arms:
        s = samples[a]
        stats[a] = {"ttft": h.summary_ms(s["ttft"]), "total": h.summary_ms(s["total"]), "errors": s["errors"],
                    "completed": s["completed"],
                    "cpu_ms_per_request": 1e3 * s["cpu_s"] / s["completed"] if a in BASELINE and s["completed"] else float("nan")}
    rows = [[a, stats[a]["completed"], stats[a]["ttft"]["p50"], stats[a]["ttft"]["p95"], stats[a]["total"]["p50"],
             stats[a]["cpu_ms_per_request"], sum(stats[a]["errors"].values())] for a in arms]
    out.print_table("arms", f"TTFT and proxy CPU per request, concurrency 1, {args.max_tokens} chunks a stream "
                    f"({args.rounds} rounds x {args.requests} requests an arm)",
                    ["arm", "n", "TTFT p50 ms", "TTFT p95 ms", "total p50 ms", "proxy CPU ms/request", "errors"], rows)

    for a, base in BASELINE.items():
        if a not in arms:
            continue
        paired = sorted(x - y for x, y in zip(samples[a]["round_p50_ttft"], samples[base]["round_p50_ttft"]))
        stats[a]["added_ttft_p50_ms"] = stats[a]["ttft"]["p50"] - stats[base]["ttft"]["p50"]
        stats[a]["added_ttft_p50_ms_paired_median"] = percentile(paired, 50) * 1e3
        stats[a]["added_total_p50_ms"] = stats[a]["total"]["p50"] - stats[base]["total"]["p50"]
    for a, base in ALSO.items():
        if a in arms and base in arms:
            paired = sorted(x - y for x, y in zip(samples[a]["round_p50_ttft"], samples[base]["round_p50_ttft"]))
            stats[a]["also"] = {"baseline": base, "added_ttft_p50_ms": stats[a]["ttft"]["p50"] - stats[base]["ttft"]["p50"],
                                "added_ttft_p50_ms_paired_median": percentile(paired, 50) * 1e3,
                                "added_total_p50_ms": stats[a]["total"]["p50"] - stats[base]["total"]["p50"]}
    added_rows = []
    lite = stats.get("litellm")
    lines = [(a, BASELINE[a], stats[a]) for a in BASELINE if a in arms]
    lines += [(a, st["also"]["baseline"], {**st, **st["also"]}) for a, st in stats.items() if "also" in st]
    for a, base, st in lines:
        row = [a, base, st["added_ttft_p50_ms"], st["added_ttft_p50_ms_paired_median"], st["added_total_p50_ms"],
               st["cpu_ms_per_request"]]
        if lite:
            share_ttft = st["added_ttft_p50_ms"] / lite["added_ttft_p50_ms"] if lite["added_ttft_p50_ms"] > 0 else float("nan")
            share_cpu = st["cpu_ms_per_request"] / lite["cpu_ms_per_request"] if lite["cpu_ms_per_request"] else float("nan")
            stats[a].setdefault("share_of_litellm", {})[base] = {"ttft": share_ttft, "cpu": share_cpu}
            met = "" if a == "litellm" else ("yes" if share_ttft <= GOAL and share_cpu <= GOAL else "no")
            row += [share_ttft, share_cpu, met]
        added_rows.append(row)
    headers = ["proxy", "baseline", "added TTFT p50 ms", "added TTFT p50 ms (paired rounds)", "added total p50 ms",
               "proxy CPU ms/request"]
    if lite:
        headers += ["TTFT share of LiteLLM's", "CPU share of LiteLLM's", f"≤ {GOAL:.0%} of LiteLLM (both)?"]
    out.print_table("added", "Added by each proxy over a direct call to its backend", headers, added_rows)
    out.result.update(stats=stats, params={k: v for k, v in vars(args).items() if k != "func"},
                      litellm=_litellm_version(Path(args.litellm_venv)) if lite else None)
    out.save()
    return out.result


def _litellm_version(venv: Path) -> str:
    try:
        return subprocess.run([str(venv / "bin" / "python"), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
                              capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""
