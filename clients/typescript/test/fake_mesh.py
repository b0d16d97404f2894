"""Start a real router over fake-engine tiers for the TypeScript client's tests.

    python clients/typescript/test/fake_mesh.py --tier fast:0 --tier slow:20

Each --tier NAME:MS starts `python -m tier_server --engine fake` with MS milliseconds
per token; each --dead-tier NAME is a tier at an address where nothing listens; then
`python -m router` over them all. With --mtls the router serves TLS and requires a client
certificate (mutual TLS): a throwaway PKI from scripts/dev_certs.py is made in a temporary
folder (ca.pem, client.pem/.key signed by client-ca.pem; router-client.pem/.key are signed
by another CA, so the router refuses them). Once the router says SERVING and lists
every tier as SERVING, one JSON line goes to stdout:
{"router": "127.0.0.1:P", "tiers": {"fast": "127.0.0.1:P1", ...}, "pki": "DIR" or null}. The mesh runs
until stdin closes (the test ends, or its process dies) or a SIGTERM/SIGINT arrives,
then every process this script started is stopped (launcher.process: they also get SIGTERM if
this script is killed).
"""

from __future__ import annotations

import argparse
import importlib.util
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


def make_pki(directory: Path) -> None:
    """scripts/dev_certs.py's throwaway CA, certificates and tokens, in `directory`."""
    spec = importlib.util.spec_from_file_location("dev_certs", REPO / "scripts" / "dev_certs.py")
    dev_certs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dev_certs)
    dev_certs.make_pki(directory)


def wait_tiers_listed_serving(router: str, names: list[str], timeout: float, pki: Path | None = None) -> None:
    """Poll the router's ListTiers until every named tier is SERVING there (with `pki`: over mutual TLS)."""
    deadline = time.monotonic() + timeout
    if pki is None:
        channel = grpc.insecure_channel(router)
    else:
        read = lambda name: (pki / name).read_bytes()  # noqa: E731
        channel = grpc.secure_channel(router, grpc.ssl_channel_credentials(read("ca.pem"), read("client.key"), read("client.pem")))
    with channel:
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
    parser.add_argument("--mtls", action="store_true", help="the router requires a client certificate (mutual TLS)")
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
            mesh = {
                "grace_seconds": 0,
                "drain_notice_seconds": 0,
                "tiers": [
                    {"name": n, "address": a, "model": f"fake-{n}", "quantization": f"q-{n}"}
                    for n, a in {**tiers, **dead}.items()
                ],
            }
            pki = Path(tmp) / "pki" if args.mtls else None
            health = None
            if pki is not None:
                make_pki(pki)
                # TLS on the router's listener, requiring a certificate that client-ca signed; health on a
                # plaintext health-only port for this script's own readiness check.
                mesh["tls"] = {"cert": str(pki / "router.pem"), "key": str(pki / "router.key"), "client_ca": str(pki / "client-ca.pem")}
                health = mesh["health_listen"] = f"127.0.0.1:{free_port()}"
            config = Path(tmp) / "mesh.yaml"
            config.write_text(json.dumps(mesh))
            router = f"127.0.0.1:{free_port()}"
            servers.append(start_router_process(config, "--log-level", "WARNING", listen=router, log=Path(tmp) / "router.log"))
            servers[-1].health_address = health
            servers[-1].wait_serving(timeout=60)
            wait_tiers_listed_serving(router, list(tiers), timeout=60, pki=pki)
            print(json.dumps({"router": router, "tiers": {**tiers, **dead}, "pki": str(pki) if pki else None}), flush=True)
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
