"""One structured log line per finished request: id and tier in it, prompt text only when asked."""

from __future__ import annotations

import io
import json
import logging

import pytest

from mesh.observability import configure_logging
from tests.observability.conftest import start_mesh, stop_mesh

SECRET = "zebra quartz umbrella"


@pytest.fixture
def json_log():
    """Logging configured as in production (JSON), into a buffer; the previous root handlers restored after."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    buf = io.StringIO()
    configure_logging("json", "INFO", stream=buf)
    yield buf
    root.handlers[:], level = saved
    root.setLevel(level)


def request_lines(buf: io.StringIO) -> list[dict]:
    lines = [json.loads(line) for line in buf.getvalue().splitlines() if line.strip()]
    return [line for line in lines if line.get("event") == "request finished"]


async def test_request_log_line_has_id_and_tier_and_no_prompt(json_log):
    """The request's JSON line carries its id, tier, reason, status, tokens and latencies, and no prompt text."""
    mesh = await start_mesh()
    try:
        await mesh.generate(SECRET, tier="b", max_tokens=3, request_id="req-42")
    finally:
        await stop_mesh(mesh)
    (line,) = request_lines(json_log)
    assert line["request_id"] == "req-42"
    assert line["tier"] == "b"
    assert line["reason"] == "pinned"
    assert line["status"] == "OK"
    assert line["finish_reason"] == "length"
    assert line["completion_tokens"] == 3 and line["prompt_tokens"] == 3
    assert line["ttft_ms"] > 0 and line["total_ms"] >= line["ttft_ms"]
    assert line["logger"] == "qarr.router.requests" and line["level"] == "info" and "timestamp" in line
    assert "prompt" not in line
    assert "zebra" not in json_log.getvalue()


async def test_log_prompts_flag_puts_the_prompt_in_the_line(json_log):
    """With log_prompts on (debug), the line also carries the prompt text."""
    mesh = await start_mesh(log_prompts=True)
    try:
        await mesh.generate(SECRET, tier="a", max_tokens=2, request_id="req-43")
    finally:
        await stop_mesh(mesh)
    (line,) = request_lines(json_log)
    assert line["request_id"] == "req-43" and line["prompt"] == SECRET


async def test_generated_request_id_and_trace_id_are_logged(json_log):
    """A request without an id gets one in its log line; with tracing on, the line carries the trace id."""
    mesh = await start_mesh(tracing=True)
    try:
        await mesh.generate(tier="a", max_tokens=2)
    finally:
        await stop_mesh(mesh)
    (line,) = request_lines(json_log)
    assert len(line["request_id"]) == 32
    (span,) = [s for s in mesh.router_spans.get_finished_spans() if s.name == "qarr.v1.RouterService/Generate"]
    assert line["trace_id"] == format(span.context.trace_id, "032x")


def test_console_format_is_one_readable_line(capsys):
    """The console renderer (TTY) prints one human line with the fields as key=value."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    buf = io.StringIO()
    try:
        configure_logging("console", "INFO", stream=buf)
        logging.getLogger("qarr.router.requests").info("request finished", extra={"qarr": {"request_id": "r1", "tier": "a"}})
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    out = buf.getvalue()
    assert out.count("\n") == 1 and "request finished" in out and "request_id=r1" in out and "{" not in out
