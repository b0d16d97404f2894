"""Start a real router with its HTTP door over fake-engine tiers, for the openai npm package's tests.

    python tests/http_node/fake_mesh.py --tier fast:0 --tier slow:20

Each --tier NAME:MS is `python -m tier_server --engine fake` with MS milliseconds a token;
then `python -m router --http-listen` over them. Once every tier is SERVING at the router,
one JSON line goes to stdout: {"http": "http://127.0.0.1:P", "router": "127.0.0.1:G", "tiers":
{"fast": "127.0.0.1:P1", ...}}. The mesh runs until stdin closes (the test ends or dies) or a
SIGTERM/SIGINT arrives; then every process started here is stopped (launcher.process: they
also get SIGTERM if this script is killed). Same approach as clients/typescript/test/fake_mesh.py.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "protos")]

from launcher.process import ServerProcess, stop_all  # noqa: E402
from tests.harness import free_port, start_router_process, start_tier_process  # noqa: E402


def wait_models_serving(http: str, names: list[str], timeout: float) -> None:
    """Poll GET /v1/models until every named tier is listed as serving."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{http}/v1/models", timeout=2) as r:
                models = json.load(r)["data"]
            if {m["id"] for m in models if m["qarr"].get("serving")} >= set(names):
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"tiers {names} not serving at {http}/v1/models after {timeout:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tier", action="append", required=True, help="NAME:MS_PER_TOKEN (repeatable)")
    parser.add_argument("--max-in-flight", type=int, default=1024, help="the router's stream limit")
    args = parser.parse_args()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: sys.exit(1))

    servers: list[ServerProcess] = []
    with tempfile.TemporaryDirectory(prefix="qarr-http-mesh-") as tmp:
        try:
            for spec in args.tier:
                name, _, delay = spec.partition(":")
                servers.append(start_tier_process(
                    name, "--engine", "fake", "--model", f"fake-{name}", "--quantization", f"q-{name}",
                    "--fake-token-delay-ms", delay or "0", "--grace-seconds", "0", "--drain-notice-seconds", "0",
                    "--log-level", "WARNING", log=Path(tmp) / f"{name}.log",
                ))
            tiers = {s.name.removeprefix("tier "): s.address for s in servers}
            for server in servers:
                server.wait_serving(timeout=60)
            config = Path(tmp) / "mesh.yaml"
            config.write_text(json.dumps({
                "grace_seconds": 0, "drain_notice_seconds": 0, "max_in_flight": args.max_in_flight,
                "tiers": [{"name": n, "address": a, "model": f"fake-{n}", "quantization": f"q-{n}"} for n, a in tiers.items()],
            }))
            router, http = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
            servers.append(start_router_process(config, "--http-listen", http, "--log-level", "WARNING",
                                                listen=router, log=Path(tmp) / "router.log"))
            servers[-1].wait_serving(timeout=60)
            wait_models_serving(f"http://{http}", list(tiers), timeout=60)
            print(json.dumps({"http": f"http://{http}", "router": router, "tiers": tiers}), flush=True)
            sys.stdin.read()  # until the test closes our stdin (or dies)
        except Exception:
            for server in servers:
                print(f"--- {server.name}\n{server.log_tail(2000)}", file=sys.stderr)
            raise
        finally:
            stop_all(servers, timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
