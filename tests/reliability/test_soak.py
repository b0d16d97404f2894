"""Issue 14, 3.9: a soak through router -> fake tiers: no failure, and no growth of open files, threads or
memory in the router or the tiers."""

from __future__ import annotations

import asyncio
import collections
import statistics
import time

from tests.reliability.procmesh import ProcMesh, expected_text, fake_tier, generate, record, request, usage

SEQUENTIAL = 1_000
CONCURRENT = 10_000
BATCH = 200  # calls in flight at once
EVERY = 1_000  # calls between two looks at the processes
# Bounds from the warmed-up servers to any look during the soak. RSS moves by +-5 MiB from look to look as the
# allocator reuses memory; gRPC's EventEngine thread pool grows by a thread or two when busy. A leak grows
# with the calls instead: the mean of the last four looks may exceed the first four's (~7,000 calls apart) by
# at most TREND_MIB, which a leak of 1 KiB a call (7 MiB) would break.
RSS_BOUND_MIB = 16
THREADS_BOUND = 2
TREND_MIB = 6
WARM_UP = 1_000


async def test_soak_11000_calls_without_failure_or_growth(tmp_path):
    """1,000 sequential calls, then 10,000 in batches of 200 concurrent, through the router to two fake tiers:
    0 failures, every call with exactly its tokens; looking at the router and both tiers every 1,000 calls, none
    ever has more open files than warmed up, more than 2 more threads or 16 MiB more RSS, and RSS shows no
    trend (last four looks vs first four: < 6 MiB)."""
    mesh = await ProcMesh(tmp_path, [fake_tier("a"), fake_tier("b")]).start()
    procs = {"router": mesh.router, **{f"tier {n}": t for n, t in mesh.tiers.items()}}
    looks: dict[str, list] = {name: [] for name in procs}

    def look() -> None:
        for name, p in procs.items():
            looks[name].append(usage(p.pid))

    try:
        # Warm up with what the soak does, batches at the soak's concurrency: the servers reach their working set.
        for _ in range(WARM_UP // BATCH):
            warm = await asyncio.gather(*(generate(mesh.stub, request(max_tokens=4)) for _ in range(BATCH)))
            assert {o.code for o in warm} == {"OK"}
        look()
        failures: collections.Counter = collections.Counter()
        t0 = time.monotonic()
        for i in range(SEQUENTIAL):
            _check(await generate(mesh.stub, request(max_tokens=1 + i % 4)), 1 + i % 4, failures)
        look()
        sequential_s = time.monotonic() - t0
        t0 = time.monotonic()
        for start in range(0, CONCURRENT, BATCH):
            calls = range(start, start + BATCH)
            outs = await asyncio.gather(*(generate(mesh.stub, request(max_tokens=1 + i % 4)) for i in calls))
            for i, out in zip(calls, outs):
                _check(out, 1 + i % 4, failures)
            if (start + BATCH) % EVERY == 0:
                look()
        concurrent_s = time.monotonic() - t0
        counted = mesh.requests_counted()
    finally:
        await mesh.stop()

    assert not failures, failures
    assert counted.get("OK") == WARM_UP + SEQUENTIAL + CONCURRENT and set(counted) == {"OK"}, counted
    figures = {}
    for name, seen in looks.items():
        warm_, later = seen[0], seen[1:]
        rss = [u.rss_mib for u in later]
        trend = statistics.mean(rss[-4:]) - statistics.mean(rss[:4])
        figures[name] = {"rss_max_growth_mib": max(rss) - warm_.rss_mib, "rss_trend_mib": trend,
                         "threads_max_growth": max(u.threads for u in later) - warm_.threads,
                         "fds_max_growth": max(u.fds for u in later) - warm_.fds, "rss_warm_mib": warm_.rss_mib}
        f = figures[name]
        assert f["fds_max_growth"] <= 0 and f["threads_max_growth"] <= THREADS_BOUND, (name, seen)
        assert f["rss_max_growth_mib"] < RSS_BOUND_MIB and trend < TREND_MIB, (name, [round(r, 1) for r in rss])
    record("soak", f"{SEQUENTIAL} sequential calls in {sequential_s:.1f} s ({SEQUENTIAL / sequential_s:.0f}/s) and "
                   f"{CONCURRENT} in batches of {BATCH} in {concurrent_s:.1f} s ({CONCURRENT / concurrent_s:.0f}/s): 0 "
                   f"failures, every token right; looked at every {EVERY} calls: " + "; ".join(
                       f"{n}: open files {f['fds_max_growth']:+d}, threads {f['threads_max_growth']:+d}, RSS at most "
                       f"{f['rss_max_growth_mib']:+.1f} MiB over warm ({f['rss_warm_mib']:.0f}), trend {f['rss_trend_mib']:+.1f}"
                       for n, f in figures.items()) + f" (bounds: files +0, threads +{THREADS_BOUND}, RSS +{RSS_BOUND_MIB} "
                   f"MiB, trend {TREND_MIB} MiB)",
           sequential_per_s=SEQUENTIAL / sequential_s, concurrent_per_s=CONCURRENT / concurrent_s, processes=figures)


def _check(out, tokens: int, failures: collections.Counter) -> None:
    if out.code != "OK" or out.text != expected_text(tokens) or out.delivered != tokens:
        failures[(out.code, out.details[:80])] += 1
