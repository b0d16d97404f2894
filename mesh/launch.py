"""Start a whole mesh on one machine: every tier server, then the router.

    python -m mesh.launch --config mesh.yaml

Tiers start in parallel (each loads its own engine); the router starts once
every tier says SERVING. Ctrl-C or SIGTERM drains everything in reverse.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path

from mesh.config import MeshConfigError, TierSpec, load_mesh
from tier_server.config import tier_argv
from mesh.processes import ServerExited, local_env, wait_serving

def tier_command(tier: TierSpec) -> list[str]:
    return [sys.executable, "-m", "tier_server", *tier_argv(tier)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qarr-mesh", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="mesh.yaml", help="mesh file: router settings and tiers (default %(default)s)")
    parser.add_argument("--start-timeout", type=float, default=300, help="seconds to wait for every tier (default %(default)s)")
    args = parser.parse_args(argv)
    try:
        config = load_mesh(args.config)
    except MeshConfigError as e:
        print(e, file=sys.stderr)
        return 2
    env = local_env()
    procs: list[tuple[str, subprocess.Popen]] = []

    def stop_all() -> None:
        for name, p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for name, p in reversed(procs):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()

    def on_sigterm(*_):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_sigterm)
    started = time.monotonic()
    try:
        for tier in config.tiers:
            print(f"starting tier {tier.name} ({tier.quantization}) on {tier.address}", flush=True)
            procs.append((tier.name, subprocess.Popen(tier_command(tier), env=env)))
        deadline = time.monotonic() + args.start_timeout
        for (name, proc), tier in zip(procs, config.tiers):
            wait_serving(tier.address, proc, timeout=deadline - time.monotonic(), poll_s=0.5)
            print(f"tier {name} SERVING after {time.monotonic() - started:.0f} s", flush=True)
        listen = config.listen
        router = subprocess.Popen([sys.executable, "-m", "router", "--config", args.config], env=env)
        procs.append(("router", router))
        wait_serving(listen, router, timeout=30)
        print(
            f"""
QARR mesh is up after {time.monotonic() - started:.0f} s: router on {listen}, tiers {', '.join(t.name for t in config.tiers)}.

  .venv/bin/qarr generate "What is the capital of France?"
  .venv/bin/qarr tiers
  grpcurl -plaintext {listen} list
  grpcurl -plaintext -d '{{"messages":[{{"role":"user","content":"What is the capital of France?"}}]}}' {listen} qarr.v1.RouterService/Generate

Ctrl-C stops the mesh.
""",
            flush=True,
        )
        while all(p.poll() is None for _, p in procs):
            time.sleep(1)
        dead = [n for n, p in procs if p.poll() is not None]
        print(f"{', '.join(dead)} exited; stopping the mesh", file=sys.stderr)
        return 1
    except (ServerExited, TimeoutError) as e:
        print(f"mesh did not start: {e}; see the server's log above", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        # Whatever ended the mesh (Ctrl-C, SIGTERM, a tier failing to start), stop what was started.
        stop_all()


if __name__ == "__main__":
    sys.exit(main())
