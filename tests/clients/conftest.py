"""Fixtures for the SDK tests: a real router over in-process fake-engine tiers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from clients import AsyncClient
from mesh.config import MeshConfig, TierSpec
from router.server import RouterServer
from tests.clients.fakes import RecordingEngine, ScriptedRouter
from tier_server.server import TierServer


REPO = Path(__file__).resolve().parents[2]


def cli_env() -> dict[str, str]:
    """Environment for `python -m clients.cli` subprocesses: this checkout's code first."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "protos")])}


async def start_cli(*args: str) -> asyncio.subprocess.Process:
    """Start `qarr ARGS` (this checkout's clients.cli) with piped output."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "clients.cli", *args, env=cli_env(), cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )


async def run_cli(*args: str, timeout: float = 120.0) -> tuple[int, str, str]:
    """Run `qarr ARGS` to its end; (exit code, stdout, stderr)."""
    proc = await start_cli(*args)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode, out.decode(), err.decode()


async def wait_tiers_serving(router: str, names: list[str], timeout: float = 20.0) -> None:
    """Poll the router's ListTiers until every named tier is SERVING."""
    async with AsyncClient(router, timeout=2, max_retries=0) as client:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            with contextlib.suppress(Exception):
                if {t.name for t in await client.tiers() if t.health == "SERVING"} >= set(names):
                    return
            await asyncio.sleep(0.05)
    raise TimeoutError(f"tiers {names} not SERVING at the router after {timeout} s")


@contextlib.asynccontextmanager
async def running_mesh(
    engines: dict[str, RecordingEngine],
    extra_tiers: dict[str, str] | None = None,
    serving: tuple[str, ...] = (),
    listen: str = "127.0.0.1:0",
) -> AsyncIterator[str]:
    """Start one TierServer per engine and a RouterServer over them (plus `extra_tiers`
    name -> address: a real tier, or a dead one); yield the router's address once the
    engines' tiers and those named in `serving` are SERVING."""
    tiers, specs = [], []
    try:
        for name, engine in engines.items():
            tier = TierServer(engine, name, f"q-{name}")
            port = await tier.start("127.0.0.1:0")
            tiers.append(tier)
            specs.append(TierSpec(name=name, address=f"127.0.0.1:{port}", model=engine.info.model, quantization=f"q-{name}"))
        for name, address in (extra_tiers or {}).items():
            specs.append(TierSpec(name=name, address=address))
        router = RouterServer(MeshConfig(listen="127.0.0.1:0", tiers=specs))
        port = await router.start(listen)
        address = f"127.0.0.1:{port}"
        try:
            await wait_tiers_serving(address, [*engines, *serving], timeout=60)
            yield address
        finally:
            await router.stop(0)
    finally:
        for tier in tiers:
            await tier.stop(0)


@pytest.fixture
def engine() -> RecordingEngine:
    return RecordingEngine(model="fake-a")


@pytest.fixture
async def router(engine: RecordingEngine) -> AsyncIterator[str]:
    """A real router over one fake tier named "a"; yields its address."""
    async with running_mesh({"a": engine}) as address:
        yield address


@pytest.fixture
async def predicted_router(tmp_path) -> AsyncIterator[tuple[str, str]]:
    """A real router over fake tiers "a" and "b" whose profiles file names a trained accuracy predictor;
    yields (its address, the predictor's id)."""
    from router.reload import load_both
    from tests.router.routing_helpers import FakeTier, Router, profile, tier_entry
    from tests.router.test_router_predictor import trained, write_predictor

    a, b = await FakeTier("a").start(), await FakeTier("b").start()
    try:
        files = Router(tmp_path, [tier_entry(a), tier_entry(b)], {"a": profile(0.5), "b": profile(0.5)})
        predictor_id = write_predictor(files, trained()[0])
        router = RouterServer(*load_both(files.config_path), files.config_path)
        address = f"127.0.0.1:{await router.start('127.0.0.1:0')}"
        try:
            await wait_tiers_serving(address, ["a", "b"], timeout=60)
            yield address, predictor_id
        finally:
            await router.stop(0)
    finally:
        await b.stop()
        await a.stop()


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[str, ScriptedRouter]]:
    """A RouterService that answers every Generate with the status its prompt names."""
    fake = ScriptedRouter()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((fake.handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}", fake
    await server.stop(0)
