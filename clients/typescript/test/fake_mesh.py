"""Start a real router over fake-engine tiers for the TypeScript client's tests.

    python clients/typescript/test/fake_mesh.py --tier fast:0 --tier slow:20

Each --tier NAME:MS starts `python -m tier_server --engine fake` with MS milliseconds
per token; each --dead-tier NAME is a tier at an address where nothing listens; then
`python -m router` over them all. Once the router says SERVING and lists
every tier as SERVING, one JSON line goes to stdout:
{"router": "127.0.0.1:P", "tiers": {"fast": "127.0.0.1:P1", ...}}. The mesh runs
until stdin closes (the test ends, or its process dies) or a SIGTERM/SIGINT arrives,
then every process this script started is stopped (launcher.process: they also get SIGTERM if
this script is killed).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(REPO), str(REPO / "protos")]

import grpc  # noqa: E402

from launcher.process import ServerProcess, stop_all  # noqa: E402
from qarr.v1 import router_service_pb2, router_service_pb2_grpc  # noqa: E402
from tests.harness import free_port, start_router_process, start_tier_process  # noqa: E402


def wait_tiers_listed_serving(router: str, names: list[str], timeout: float) -> None:
    """Poll the router's ListTiers until every named tier is SERVING there."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(router) as channel:
        stub = router_service_pb2_grpc.RouterServiceStub(channel)
        while time.monotonic() < deadline:
            try:
                tiers = stub.ListTiers(router_service_pb2.ListTiersRequest(), timeout=2).tiers
                if {t.name for t in tiers if t.health == router_service_pb2.HEALTH_STATE_SERVING} >= set(names):
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.05)
    raise TimeoutError(f"tiers {names} not SERVING at the router after {timeout:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tier", action="append", required=True, help="NAME:MS_PER_TOKEN (repeatable)")
    parser.add_argument("--dead-tier", action="append", default=[], help="NAME of a tier with nothing listening (repeatable)")
    args = parser.parse_args()
    # SIGTERM/SIGINT unwind through the finally below like the end of stdin does.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: sys.exit(1))

    servers: list[ServerProcess] = []
    with tempfile.TemporaryDirectory(prefix="qarr-ts-mesh-") as tmp:
        try:
            for spec in args.tier:
                name, _, delay = spec.partition(":")
                servers.append(
                    start_tier_process(
                        name, "--engine", "fake", "--model", f"fake-{name}", "--quantization", f"q-{name}",
                        "--fake-token-delay-ms", delay or "0", "--grace-seconds", "0", "--drain-notice-seconds", "0",
                        "--log-level", "WARNING", log=Path(tmp) / f"{name}.log",
                    )
                )
            tiers = {s.name.removeprefix("tier "): s.address for s in servers}
            for server in servers:
                server.wait_serving(timeout=60)

            dead = {name: f"127.0.0.1:{free_port()}" for name in args.dead_tier}
            config = Path(tmp) / "mesh.yaml"
            config.write_text(
                json.dumps(
                    {
                        "grace_seconds": 0,
                        "drain_notice_seconds": 0,
                        "tiers": [
                            {"name": n, "address": a, "model": f"fake-{n}", "quantization": f"q-{n}"}
                            for n, a in {**tiers, **dead}.items()
                        ],
                    }
                )
            )
            router = f"127.0.0.1:{free_port()}"
            servers.append(start_router_process(config, "--log-level", "WARNING", listen=router, log=Path(tmp) / "router.log"))
            servers[-1].wait_serving(timeout=60)
            wait_tiers_listed_serving(router, list(tiers), timeout=60)
            print(json.dumps({"router": router, "tiers": {**tiers, **dead}}), flush=True)
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
