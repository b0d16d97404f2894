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

import yaml

from mesh.processes import ServerExited, local_env, wait_serving

FLAGS = (
    "dtype", "vllm_quantization", "kv_cache_gib", "max_num_seqs", "engine", "fake_token_delay_ms", "grace_seconds",
    "metrics_port", "metrics_host", "otlp_endpoint", "log_format",
)


def tier_command(tier: dict) -> list[str]:
    host, _, port = tier["address"].rpartition(":")
    cmd = [sys.executable, "-m", "tier_server", "--name", tier["name"], "--model", tier["model"],
           "--quantization", tier.get("quantization", ""), "--host", host, "--port", port,
           "--max-model-len", str(tier.get("max_model_len", 2048))]
    for key, value in (tier.get("serve") or {}).items():
        if key not in FLAGS:
            raise SystemExit(f"tier {tier['name']}: unknown serve option {key!r} (known: {', '.join(FLAGS)})")
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    return cmd


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qarr-mesh", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="mesh.yaml", help="mesh file: router settings and tiers (default %(default)s)")
    parser.add_argument("--start-timeout", type=float, default=300, help="seconds to wait for every tier (default %(default)s)")
    args = parser.parse_args(argv)
    config = yaml.safe_load(Path(args.config).read_text())
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
        for tier in config["tiers"]:
            print(f"starting tier {tier['name']} ({tier.get('quantization', '')}) on {tier['address']}", flush=True)
            procs.append((tier["name"], subprocess.Popen(tier_command(tier), env=env)))
        deadline = time.monotonic() + args.start_timeout
        for (name, proc), tier in zip(procs, config["tiers"]):
            wait_serving(tier["address"], proc, timeout=deadline - time.monotonic(), poll_s=0.5)
            print(f"tier {name} SERVING after {time.monotonic() - started:.0f} s", flush=True)
        listen = config.get("listen", "127.0.0.1:50051")
        router = subprocess.Popen([sys.executable, "-m", "router", "--config", args.config], env=env)
        procs.append(("router", router))
        wait_serving(listen, router, timeout=30)
        print(
            f"""
QARR mesh is up after {time.monotonic() - started:.0f} s: router on {listen}, tiers {', '.join(t['name'] for t in config['tiers'])}.

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
