"""The batch runner (Python API and `qarr batch`) against a real router over fake-engine tiers."""

from __future__ import annotations

import asyncio
import io
import json
import signal
import time
from pathlib import Path

import pytest

from clients import BadLine, arun_batch
from clients.batch import load_results
from tests.clients.conftest import run_cli, running_mesh, start_cli
from tests.clients.fakes import RecordingEngine


def write_prompts(path: Path, n: int, **fields) -> list[str]:
    ids = [f"p{i}" for i in range(n)]
    with open(path, "w") as f:
        for i in ids:
            f.write(json.dumps({"id": i, "prompt": f"question {i}", **fields}) + "\n")
    return ids


def result_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def sent_ids(engine: RecordingEngine) -> list[str]:
    """Batch ids of the requests the tier received (request ids are `ID:random`)."""
    return [r.rsplit(":", 1)[0] for r in engine.requests]


async def test_batch_of_500_at_concurrency_32_writes_500_results(router, engine, tmp_path):
    """500 prompts at concurrency 32: 500 result lines, one per id, at most 32 in flight, each sent once."""
    engine.token_delay_s = 0.002
    ids = write_prompts(tmp_path / "in.jsonl", 500, max_tokens=4)
    started = time.perf_counter()
    summary = await arun_batch(tmp_path / "in.jsonl", tmp_path / "out.jsonl", target=router, concurrency=32, progress=False)
    wall = time.perf_counter() - started
    lines = result_lines(tmp_path / "out.jsonl")
    assert sorted(r["id"] for r in lines) == sorted(ids)
    assert all(r["error"] is None and r["text"] == "alpha bravo charlie delta " for r in lines)
    assert (summary.succeeded, summary.failed, summary.already_done) == (500, 0, 0)
    assert sorted(sent_ids(engine)) == sorted(ids)
    assert 1 < engine.peak_in_flight <= 32
    print(f"batch of 500 at concurrency 32 (in-process fake tier): {wall:.2f} s, {500 / wall:.0f} prompts/s")


async def test_result_lines_carry_text_usage_tier_latency_and_error(router, tmp_path):
    """A result line holds text, usage, tier, latency and error (null, or the error's class, code and message)."""
    (tmp_path / "in.jsonl").write_text(
        json.dumps({"id": "ok", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "metadata": {"row": 1}}) + "\n"
        + json.dumps({"id": "bad", "prompt": "hi", "tier": "nope"}) + "\n"
    )
    summary = await arun_batch(tmp_path / "in.jsonl", tmp_path / "out.jsonl", target=router, progress=False)
    by_id = {r["id"]: r for r in result_lines(tmp_path / "out.jsonl")}
    ok, bad = by_id["ok"], by_id["bad"]
    assert (ok["text"], ok["finish_reason"], ok["tier"], ok["error"], ok["metadata"], ok["line"]) == (
        "alpha bravo ", "length", "a", None, {"row": 1}, 1)
    assert ok["usage"]["completion_tokens"] == 2 and ok["latency_ms"] > 0 and ok["ttft_ms"] > 0
    assert bad["error"]["type"] == "InvalidRequest" and bad["error"]["code"] == "INVALID_ARGUMENT"
    assert bad["error"]["reason"] == "UNKNOWN_TIER" and "nope" in bad["error"]["message"]
    assert (summary.succeeded, summary.failed, dict(summary.errors)) == (1, 1, {"InvalidRequest": 1})


async def test_summary_counts_tier_mix_latency_percentiles_and_tokens(tmp_path):
    """The summary has counts, the per-tier mix, p50/p95 latency and token totals."""
    with open(tmp_path / "in.jsonl", "w") as f:
        for i in range(10):
            f.write(json.dumps({"id": i, "prompt": "one two", "max_tokens": 3, "tier": "a" if i < 7 else "b"}) + "\n")
    async with running_mesh({"a": RecordingEngine(), "b": RecordingEngine()}) as router:
        s = await arun_batch(tmp_path / "in.jsonl", tmp_path / "out.jsonl", target=router, progress=False)
    assert dict(s.tiers) == {"a": 7, "b": 3}
    assert (s.prompt_tokens, s.completion_tokens) == (20, 30)
    assert 0 < s.latency_ms(50) <= s.latency_ms(95)
    text = s.format()
    assert "ok 10, errors 0" in text and "a 7 (70%), b 3 (30%)" in text and "p50" in text and "p95" in text
    assert "20 prompt + 30 completion" in text


async def test_malformed_lines_are_reported_with_line_numbers_and_skipped(router, engine, tmp_path):
    """Bad lines are reported with their line number and why, and the good lines still run."""
    lines = [
        '{"id": "a", "prompt": "fine"}',
        '{"id": "b", "prompt": ',  # 2: torn JSON
        "",  # 3: blank, ignored
        '["not", "an", "object"]',  # 4
        '{"id": "c"}',  # 5: neither prompt nor messages
        '{"id": "d", "prompt": "x", "max_token": 3}',  # 6: unknown field (typo)
        '{"id": "a", "prompt": "again"}',  # 7: duplicate id
        '{"id": "e", "prompt": "x", "max_tokens": "many"}',  # 8: wrong type
        '{"id": "f", "messages": [{"role": "user"}]}',  # 9: message without content
        '{"prompt": "no id, so the line number is the id"}',  # 10
    ]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    reported: list[BadLine] = []
    s = await arun_batch(tmp_path / "in.jsonl", tmp_path / "out.jsonl", target=router, progress=False, on_bad_line=reported.append)
    assert [b.line for b in reported] == [2, 4, 5, 6, 7, 8, 9]
    assert "not valid JSON" in reported[0].error and "unknown field(s) max_token" in reported[3].error
    assert "duplicate id 'a' (first on line 1)" in reported[4].error and "max_tokens must be an integer" in reported[5].error
    assert s.bad_lines == reported
    assert sorted(r["id"] for r in result_lines(tmp_path / "out.jsonl")) == ["10", "a"]


async def test_cli_reports_bad_lines_as_file_and_line_and_exits_1(router, tmp_path):
    """`qarr batch` prints FILE:LINE for each bad line to stderr, runs the rest and exits 1."""
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"id": 1, "prompt": "ok"}\nnot json\n{"id": 2, "prompt": "ok", "temperature": "hot"}\n')
    code, _, err = await run_cli("batch", str(inp), "-o", str(tmp_path / "out.jsonl"), "--target", router, "--max-tokens", "2")
    assert code == 1
    assert f"{inp}:2: skipped: not valid JSON" in err and f"{inp}:3: skipped: temperature must be a number" in err
    assert [r["id"] for r in result_lines(tmp_path / "out.jsonl")] == ["1"]
    assert "2 bad lines" in err


async def test_rerun_skips_finished_ids_and_retry_errors_resends_only_errors(router, engine, tmp_path):
    """A re-run sends nothing already in the output; with retry_errors it re-sends exactly the failed ids."""
    ids = write_prompts(tmp_path / "in.jsonl", 10, max_tokens=2)
    out = tmp_path / "out.jsonl"
    engine.unavailable_next = 3
    first = await arun_batch(tmp_path / "in.jsonl", out, target=router, concurrency=1, max_retries=0, progress=False)
    assert (first.succeeded, first.failed) == (7, 3)
    failed = {r["id"] for r in result_lines(out) if r["error"]}

    again = await arun_batch(tmp_path / "in.jsonl", out, target=router, progress=False)
    assert (again.already_done, again.finished) == (10, 0)
    assert len(engine.requests) == 10

    retried = await arun_batch(tmp_path / "in.jsonl", out, target=router, retry_errors=True, progress=False)
    assert (retried.already_done, retried.succeeded) == (7, 3)
    assert set(sent_ids(engine)[10:]) == failed and len(engine.requests) == 13
    assert load_results(out) == {i: True for i in ids}


async def test_resume_cuts_a_torn_last_line(router, engine, tmp_path):
    """A half-written last line (as a kill leaves) is cut off, and its id runs again on its own line."""
    write_prompts(tmp_path / "in.jsonl", 3, max_tokens=2)
    out = tmp_path / "out.jsonl"
    out.write_text(json.dumps({"id": "p0", "text": "done", "error": None}) + "\n" + '{"id": "p1", "text": "hal')
    s = await arun_batch(tmp_path / "in.jsonl", out, target=router, progress=False)
    assert (s.already_done, s.succeeded) == (1, 2)
    lines = result_lines(out)  # every line parses
    assert [r["id"] for r in lines][0] == "p0" and sorted(r["id"] for r in lines) == ["p0", "p1", "p2"]
    assert sorted(sent_ids(engine)) == ["p1", "p2"]


async def test_progress_is_plain_periodic_lines_when_not_a_tty(router, engine, tmp_path):
    """Without a terminal, progress is a plain line every interval with count, rate and ETA."""
    engine.token_delay_s = 0.01
    write_prompts(tmp_path / "in.jsonl", 40, max_tokens=5)
    stream = io.StringIO()
    await arun_batch(tmp_path / "in.jsonl", tmp_path / "out.jsonl", target=router, concurrency=4,
                     progress_stream=stream, progress_interval_s=0.05)
    lines = stream.getvalue().splitlines()
    assert len(lines) >= 3
    assert lines[0].startswith("batch: 0/40") and lines[-1].startswith("batch: 40/40 (100%) ok=40 errors=0")
    assert all("rate=" in line and "eta=" in line for line in lines)


async def test_progress_is_a_bar_on_a_terminal(router, tmp_path):
    """On a terminal, progress is a rich bar showing the count."""

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    write_prompts(tmp_path / "in.jsonl", 20, max_tokens=2)
    stream = Terminal()
    await arun_batch(tmp_path / "in.jsonl", tmp_path / "out.jsonl", target=router, progress_stream=stream)
    assert "20/20" in stream.getvalue() and "ETA" in stream.getvalue()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
async def test_killing_the_batch_half_way_then_rerunning_loses_nothing_and_resends_nothing(router, engine, tmp_path, sig):
    """Kill `qarr batch` half-way, run it again: 500 unique result lines, and no finished id reaches the tier twice."""
    engine.token_delay_s = 0.02
    engine.hold_after = 250  # the first run cannot finish before the signal: its calls past 250 wait
    ids = write_prompts(tmp_path / "in.jsonl", 500)
    out = tmp_path / "out.jsonl"
    args = ("batch", str(tmp_path / "in.jsonl"), "-o", str(out), "--concurrency", "32", "--target", router)
    # The runs differ only in --max-tokens, so the tier can tell whose request it saw
    # even if the killed run's last calls arrive late.
    proc = await start_cli(*args, "--max-tokens", "10")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not out.exists() or out.read_bytes().count(b"\n") < 200):
        await asyncio.sleep(0.01)
    proc.send_signal(sig)
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    except TimeoutError:  # say why it may have hung (a signal it ignores) and what it printed
        ignored = Path(f"/proc/{proc.pid}/status").read_text().split("SigIgn:")[1].split()[0]
        proc.kill()
        _, err = await proc.communicate()
        raise AssertionError(f"qarr batch still running 30 s after {sig.name} (its ignored signals: {ignored}):\n"
                             f"{err.decode()[-2000:]}") from None
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "interrupted" in err.decode()
    else:
        assert proc.returncode == -signal.SIGKILL
    finished_first = set(load_results(out))
    assert 200 <= len(finished_first) <= 250, "the first run must stop half-way for this test to mean anything"
    engine.hold_after = None

    code, _, err = await run_cli(*args, "--max-tokens", "11")
    assert code == 0, err
    lines = result_lines(out)
    assert len(lines) == 500 and sorted(r["id"] for r in lines) == sorted(ids)
    assert all(r["error"] is None for r in lines)
    second = [r.rsplit(":", 1)[0] for r, n in engine.max_tokens.items() if n == 11]
    assert not finished_first & set(second), "a finished id was sent again"
    assert sorted(second) == sorted(set(ids) - finished_first), "each unfinished id is sent exactly once"
    assert f"{len(finished_first)} already done" in err
