"""Security fixtures: a throwaway PKI and tokens (scripts/dev_certs.py, made once per session), and a
locked mesh in this process: two fake tiers that accept only the router's certificate, and a router with
TLS on its listener, mutual TLS to the tiers and bearer tokens."""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from mesh.config import ClientTLS, ServerTLS
from mesh.tls import channel_credentials
from tests.harness import REPO
from tests.router.conftest import started  # noqa: F401  (the fixture, for tests here)
from tests.router.routing_helpers import FakeTier, Router, profile, tier_entry

_spec = importlib.util.spec_from_file_location("dev_certs", REPO / "scripts" / "dev_certs.py")
dev_certs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dev_certs)

PROFILES = {"a": profile(0.9, cost=0.1), "b": profile(0.8, cost=0.2)}


@dataclass
class Pki:
    """The files of scripts/dev_certs.py in `dir`, and those of an unrelated set in `stranger`."""

    dir: Path
    tokens: dict[str, str]  # caller -> token
    stranger: Path
    stranger_tokens: dict[str, str]

    def path(self, name: str, stranger: bool = False) -> str:
        return str((self.stranger if stranger else self.dir) / name)

    def read(self, name: str, stranger: bool = False) -> bytes:
        return Path(self.path(name, stranger)).read_bytes()

    def server(self, stem: str, client_ca: str | None = None) -> dict:
        """A `tls:` block for a listener using STEM.pem/.key (mutual TLS with `client_ca`)."""
        block = {"cert": self.path(f"{stem}.pem"), "key": self.path(f"{stem}.key")}
        return {**block, "client_ca": self.path(client_ca)} if client_ca else block

    def upstream(self) -> dict:
        """The router's `upstream_tls:` block: trust the server CA, present router-client.pem."""
        return {"ca": self.path("ca.pem"), "cert": self.path("router-client.pem"), "key": self.path("router-client.key")}

    def credentials(self, ca: str = "ca.pem", client: str | None = None, stranger_ca: bool = False,
                    stranger_client: bool = False) -> grpc.ChannelCredentials:
        """Channel credentials trusting `ca` and presenting `client`.pem/.key when given."""
        return channel_credentials(ClientTLS(
            ca=self.path(ca, stranger_ca),
            cert=self.path(f"{client}.pem", stranger_client) if client else None,
            key=self.path(f"{client}.key", stranger_client) if client else None,
        ))

    def bearer(self, caller: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.tokens[caller]}"),)


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Pki:
    mine, stranger = tmp_path_factory.mktemp("pki"), tmp_path_factory.mktemp("pki-stranger")
    return Pki(mine, dev_certs.make_pki(mine), stranger, dev_certs.make_pki(stranger))


class LogCapture(logging.Handler):
    """Every log record of the process, formatted with its arguments and extra fields."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(f"{record.getMessage()} {record.__dict__!r}")


@dataclass
class LockedMesh:
    router: Router
    tiers: list[FakeTier]
    pki: Pki
    logs: LogCapture

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.router.server.mesh.port}"

    def channel(self, credentials: grpc.ChannelCredentials | None = None) -> grpc.aio.Channel:
        """A channel to the router: TLS with `credentials` (default: trusting the mesh CA), else plaintext."""
        credentials = credentials or self.pki.credentials()
        return grpc.aio.secure_channel(self.address, credentials, options=(("grpc.enable_retries", 0),))


@pytest.fixture(scope="module")
async def locked_mesh(pki, tmp_path_factory):
    """Tiers a and b (fake engines, 10 ms a token) that take only certificates signed by router-ca; a router
    serving TLS with router.pem, calling the tiers with router-client.pem, accepting the pki's tokens."""
    logs = LogCapture()
    root = logging.getLogger()
    level = root.level
    root.addHandler(logs)
    root.setLevel(logging.DEBUG)
    tier_tls = ServerTLS.model_validate(pki.server("tier", client_ca="router-ca.pem"))
    tiers = [await FakeTier(name, token_delay_s=0.01, tls=tier_tls).start() for name in "ab"]
    router = Router(
        tmp_path_factory.mktemp("locked"), [tier_entry(t) for t in tiers], PROFILES,
        tls=pki.server("router"), upstream_tls=pki.upstream(),
        auth={"tokens_file": pki.path("tokens")}, max_in_flight_per_caller=64,
    )
    await router.start()
    try:
        await router.wait_serving("a", "b")
        yield LockedMesh(router, tiers, pki, logs)
    finally:
        await router.stop()
        for t in tiers:
            await t.stop()
        root.removeHandler(logs)
        root.setLevel(level)
