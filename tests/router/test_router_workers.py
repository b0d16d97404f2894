"""`python -m router --workers 2`: two full routers on one port, one /metrics adding them up, affinity the
same in both, a killed worker restarted, and no worker outliving its parent on any stop path."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import urllib.request

import grpc
import psutil
import yaml
from prometheus_client.parser import text_string_to_metric_families

from qarr.v1 import common_pb2, router_service_pb2 as pb, router_service_pb2_grpc
from tests.harness import ServerProcess, free_port
from tests.process_tree import alive, descendants, wait_until_none
from tests.router.routing_helpers import TEST_SETTINGS, FakeTier, replicated_entry

GRACE_S = 1.0


async def start_workers(started, tmp_path, n: int = 2):
    reps = [await started(FakeTier("a", token_delay_s=0.002)) for _ in range(2)]
    metrics_port = free_port()
    mesh = {**TEST_SETTINGS, "tiers": [replicated_entry("a", reps)], "grace_seconds": GRACE_S, "drain_notice_seconds": 0.2,
            "observability": {"metrics_port": metrics_port}}
    path = tmp_path / "mesh.yaml"
    path.write_text(yaml.safe_dump(mesh))
    listen = f"127.0.0.1:{free_port()}"
    argv = [sys.executable, "-m", "router", "--config", str(path), "--listen", listen, "--workers", str(n), "--log-format", "json"]
    router = ServerProcess("router", argv, listen, log=tmp_path / "router.log", stop_timeout_s=GRACE_S + 5).start()
    await asyncio.to_thread(router.wait_serving, 60)
    await wait_workers(router, n)
    return router, reps, metrics_port


def listening(pid: int, port: int) -> bool:
    try:
        return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in psutil.Process(pid).net_connections("tcp"))
    except psutil.Error:
        return False


async def wait_workers(router: ServerProcess, n: int, timeout: float = 60) -> list[int]:
    """The pids of the router's n workers once they all listen on its port."""
    t0 = time.monotonic()
    port = int(router.address.rpartition(":")[2])
    while True:
        pids = [p.pid for p in descendants(router.pid) if "--worker" in p.cmdline]
        if len(pids) == n and all(listening(pid, port) for pid in pids):
            return pids
        assert time.monotonic() - t0 < timeout, f"{len(pids)} workers, not all listening, after {timeout} s"
        await asyncio.sleep(0.1)


async def generate_on_new_connection(address: str, req: pb.GenerateRequest, resets: list | None = None) -> pb.GenerateResponse:
    """One call over its own TCP connection (a local subchannel pool), so SO_REUSEPORT can put it on any worker.
    A connection the kernel reset before the call started (it was queued on a worker that just died) is retried
    once, as the SDK does, and counted in `resets`."""
    for attempt in range(2):
        options = (("grpc.use_local_subchannel_pool", 1), ("grpc.enable_retries", 0))
        async with grpc.aio.insecure_channel(address, options=options) as ch:
            last = None
            try:
                async for msg in router_service_pb2_grpc.RouterServiceStub(ch).Generate(req, timeout=30):
                    last = msg
                return last
            except grpc.aio.AioRpcError as e:
                if attempt or last is not None or "failed to connect" not in (e.details() or "") or resets is None:
                    raise
                resets.append(e.details())


def conversation(i: int) -> pb.GenerateRequest:
    messages = [common_pb2.ChatMessage(role="system", content="One shared system prompt, long enough. " * 30),
                common_pb2.ChatMessage(role="user", content=f"question {i}")]
    return pb.GenerateRequest(messages=messages, sampling={"max_tokens": 4},
                              routing=pb.RoutingHints(min_accuracy=0.0, latency_budget_ms=60_000))


def metric(port: int, name: str) -> dict[tuple, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {tuple(sorted(s.labels.items())): s.value for f in text_string_to_metric_families(text)
            for s in f.samples if s.name == name}


async def test_two_workers_share_the_port_agree_on_affinity_and_add_up_metrics(started, tmp_path):
    """32 calls over 32 connections: both workers serve some, every call with the shared prefix lands on the same
    replica whichever worker took it, and the one /metrics counts all 32."""
    router, reps, metrics_port = await start_workers(started, tmp_path)
    try:
        last = [await generate_on_new_connection(router.address, conversation(i)) for i in range(32)]
        lines = [json.loads(x) for x in router.log_tail(10**7).splitlines() if x.startswith("{")]
        served = [x for x in lines if x.get("event") == "request finished"]
        by_worker = {x["worker"] for x in served}
        replicas = {m.replica for m in last}
        requests = sum(metric(metrics_port, "qarr_router_requests_total").values())
        per_replica = metric(metrics_port, "qarr_router_replica_requests_total")
    finally:
        router.stop()
    print(f"\n--workers 2: calls per worker {[sum(x['worker'] == w for x in served) for w in (0, 1)]}; "
          f"replicas used by the shared prefix {len(replicas)}; /metrics counts {requests:.0f} requests")
    assert by_worker == {0, 1}
    assert len(replicas) == 1
    assert requests == 32
    assert per_replica[(("replica", replicas.pop()), ("tier", "a"))] == 32


async def test_a_killed_worker_is_restarted_while_the_port_keeps_serving(started, tmp_path):
    """kill -9 of one worker: new connections keep being served by the other, and the parent starts a new worker."""
    router, reps, _ = await start_workers(started, tmp_path)
    try:
        first, second = await wait_workers(router, 2)
        os.kill(first, signal.SIGKILL)
        t0 = time.monotonic()
        results, resets = [], []
        while time.monotonic() - t0 < 3:
            results.append(await generate_on_new_connection(router.address, conversation(len(results)), resets))
        pids = await wait_workers(router, 2)
        assert first not in pids and second in pids
        restarted = time.monotonic() - t0
        assert all(r.finish_reason == common_pb2.FINISH_REASON_LENGTH for r in results)
    finally:
        router.stop()
    print(f"\nworker killed: {len(results)} calls on new connections meanwhile, all served "
          f"({len(resets)} connections reset by the kernel and tried again); a new worker up {restarted:.1f} s after the kill")
    assert len(resets) <= 2


async def test_no_worker_outlives_the_router(started, tmp_path):
    """SIGTERM to the parent: it and its workers are gone within grace + 5 s; kill -9 of the parent: the workers
    get SIGTERM (PR_SET_PDEATHSIG) and are gone too."""
    router, reps, _ = await start_workers(started, tmp_path)
    workers = await wait_workers(router, 2)
    router.terminate()
    code = await asyncio.to_thread(router.wait_exit, GRACE_S + 5)
    left, took = await asyncio.to_thread(wait_until_none, lambda: alive(workers), 1)
    assert code == 0 and not left, (code, left)

    router, reps, _ = await start_workers(started, tmp_path)
    workers = await wait_workers(router, 2)
    os.kill(router.pid, signal.SIGKILL)
    left, orphaned_for = await asyncio.to_thread(wait_until_none, lambda: alive(workers), GRACE_S + 5)
    router.stop()
    assert not left, left
    print(f"\nSIGTERM: router and workers gone after {took:.1f} s more; kill -9 of the parent: workers gone "
          f"{orphaned_for:.1f} s later")
