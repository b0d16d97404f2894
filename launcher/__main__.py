"""Run a whole mesh on one machine and keep it running: every tier server, then the router.

    python -m launcher --config mesh.yaml        (what `make up` runs)

Tiers start in parallel (each loads its own engine); the router starts once
every tier says SERVING. A server that exits later is restarted with backoff
while the others keep serving. Ctrl-C or SIGTERM drains everything and stops
it, engine processes included.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from launcher.process import ServerExited, local_env, router_process, stop_all, tier_processes
from launcher.supervisor import Backoff, Supervisor
from mesh.config import MeshConfig, MeshConfigError, load_mesh


class StopFlag:
    """Set by SIGINT/SIGTERM. The handler only sets a flag: the main loop notices it within a tick."""

    def __init__(self) -> None:
        self.signal: int | None = None
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, _frame) -> None:
        if self.signal is None:
            self.signal = signum
        else:
            say(f"{signal.Signals(signum).name} again: already stopping")

    def __call__(self) -> bool:
        return self.signal is not None


def say(message: str) -> None:
    print(f"[launcher] {message}", flush=True)


def banner(listen: str, tiers: list[str], up_s: float, config: MeshConfig | None = None) -> str:
    tls = config.tls if config else None
    ca = config.upstream_tls.ca if tls and config.upstream_tls and config.upstream_tls.ca else "CA.pem"
    qarr_flags = f" --ca-file {ca}" if tls else ""
    grpcurl_flags = f"-cacert {ca}" if tls else "-plaintext"
    curl_flags = f" --cacert {ca}" if tls else ""
    if config is not None and config.auth is not None:
        qarr_flags += " --token-file TOKEN_FILE"
        grpcurl_flags += " -H \"authorization: Bearer $TOKEN\""
        curl_flags += " -H \"authorization: Bearer $TOKEN\""
    openai = ""
    if config is not None and config.http.enabled:
        url = f"{'https' if tls else 'http'}://{config.http.listen}/v1"
        openai = f"""
OpenAI-compatible HTTP door on {url} (model "auto", or a tier name to pin):
  curl{curl_flags} {url}/chat/completions -H 'content-type: application/json' \\
    -d '{{"model":"auto","messages":[{{"role":"user","content":"What is the capital of France?"}}]}}'
"""
    return f"""
QARR mesh is up after {up_s:.0f} s: router on {listen}, tiers {', '.join(tiers)}.

  .venv/bin/qarr generate{qarr_flags} "What is the capital of France?"
  .venv/bin/qarr tiers{qarr_flags}
  .venv/bin/grpcurl {grpcurl_flags} {listen} list
  .venv/bin/grpcurl {grpcurl_flags} -d '{{"messages":[{{"role":"user","content":"What is the capital of France?"}}]}}' {listen} qarr.v1.RouterService/Generate
{openai}
A server that exits is restarted. Ctrl-C drains and stops the mesh.
"""


def security_problems(config: MeshConfig) -> list[str]:
    """What would leave a mesh this launcher runs half-locked or unable to talk: the router's side
    (upstream_tls) and each tier's listener (serve.tls) must agree, and with auth on every tier must
    accept only the router's certificate."""
    up = config.upstream_tls
    problems = []
    for t in config.tiers:
        tls = t.serve.tls
        if tls is not None and up is None:
            problems.append(f"tier {t.name} serves TLS but upstream_tls is unset: the router would call it in plaintext")
        if tls is None and up is not None:
            problems.append(f"upstream_tls is set but tier {t.name} serves plaintext (add serve.tls)")
        if tls is not None and tls.require_client_cert and (up is None or up.cert is None):
            problems.append(f"tier {t.name} requires a client certificate but upstream_tls has none for the router")
        if config.auth is not None and not config.auth.allow_plaintext_tiers and not (tls and tls.require_client_cert):
            problems.append(f"auth is on but tier {t.name} takes calls without the router's certificate (set serve.tls.client_ca)")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qarr-launcher", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="mesh.yaml", help="mesh file: router settings and tiers (default %(default)s)")
    parser.add_argument("--start-timeout", type=float, default=300, help="seconds a server may take to say SERVING (default %(default)s)")
    parser.add_argument("--log-dir", type=Path, help="write each server's output to DIR/<name>.log (default: this console)")
    parser.add_argument("--restart-backoff", type=float, default=1.0, help="first restart delay in seconds, doubling (default %(default)s)")
    parser.add_argument("--restart-backoff-max", type=float, default=30.0, help="longest restart delay (default %(default)s)")
    parser.add_argument("--router-workers", type=int, default=1, help="router processes on the router's port "
                        "(python -m router --workers N; default %(default)s)")
    args = parser.parse_args(argv)
    try:
        config = load_mesh(args.config)
    except MeshConfigError as e:
        print(e, file=sys.stderr)
        return 2

    stop = StopFlag()
    env = local_env()
    log = (lambda name: args.log_dir / f"{name}.log") if args.log_dir else (lambda name: None)
    if problems := security_problems(config):
        print(f"{args.config}: " + "\n  ".join(["the mesh's TLS settings do not fit together:", *problems]), file=sys.stderr)
        return 2
    try:
        tiers = [server for t in config.tiers for server in tier_processes(t, log, env, config.upstream_tls)]
        workers = ["--workers", str(args.router_workers)] if args.router_workers > 1 else []
        router = router_process(args.config, config, args=workers, log=log("router"), env=env)
    except ValueError as e:
        print(f"{args.config}: {e}", file=sys.stderr)
        return 2
    supervisor = Supervisor(
        stop, say, backoff=lambda: Backoff(args.restart_backoff, args.restart_backoff_max),
        start_timeout_s=args.start_timeout,
    )
    started = time.monotonic()
    code = 0
    try:
        for t in config.tiers:
            where = ", ".join(t.static_addresses) or f"dns {t.dns} (replicas run elsewhere; not started here)"
            say(f"starting tier {t.name} ({t.quantization or t.serve.engine}) on {where}")
        if supervisor.start(tiers) and supervisor.start([router]):
            print(banner(router.address, [t.name for t in config.tiers], time.monotonic() - started, config), flush=True)
            supervisor.run()
    except (ServerExited, TimeoutError) as e:
        say(f"the mesh did not start: {e}; see the server's log above")
        code = 1
    finally:
        # Whatever ended the mesh (Ctrl-C, SIGTERM, a server failing to start), stop what was started.
        why = signal.Signals(stop.signal).name if stop.signal else "start failed"
        say(f"{why}: draining and stopping the router and {len(tiers)} tier servers")
        t0 = time.monotonic()
        stop_all([router, *reversed(tiers)], say=say)
        say(f"stopped in {time.monotonic() - t0:.1f} s")
    return code


if __name__ == "__main__":
    sys.exit(main())
