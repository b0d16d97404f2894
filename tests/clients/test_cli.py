"""`qarr` commands as a user runs them (subprocesses) against a real router over a fake tier."""

from __future__ import annotations

import argparse
import json
import socket

import pytest

from clients.cli import TOOLS, build_parser, main
from tests.clients.conftest import run_cli


async def test_generate_streams_text_to_stdout_and_tier_to_stderr(router):
    """`qarr generate` prints the answer on stdout and the tier, finish reason and tokens on stderr."""
    code, out, err = await run_cli("generate", "What is the capital of France?", "--target", router, "--max-tokens", "3")
    assert code == 0, err
    assert out == "alpha bravo charlie \n"
    assert "tier=a" in err and "finish=length" in err and "+3]" in err


async def test_generate_json_prints_one_chunk_per_line(router):
    """`qarr generate --json` prints each typed chunk as a JSON line, the last with finish_reason and usage."""
    code, out, _ = await run_cli("generate", "hi", "--target", router, "--max-tokens", "2", "--json", "--raw", "--tier", "a")
    chunks = [json.loads(line) for line in out.splitlines()]
    assert code == 0
    assert [c["text"] for c in chunks] == ["alpha ", "bravo ", ""]
    assert chunks[-1]["finish_reason"] == "length" and chunks[-1]["usage"] == {"prompt_tokens": 1, "completion_tokens": 2}
    assert chunks[-1]["routing_reason"] == "pinned"


async def test_generate_error_prints_class_message_and_reason_and_exits_2(router):
    """A failed call prints the error class, the server's message and its reason, and exits 2."""
    code, out, err = await run_cli("generate", "hi", "--target", router, "--tier", "nope")
    assert code == 2 and out == ""
    assert err.startswith("error: InvalidRequest: routing.tier 'nope' is not a known tier") and "(UNKNOWN_TIER)" in err


async def test_tiers_prints_a_table_with_health_breaker_and_load(router):
    """`qarr tiers` prints one row per tier under NAME, HEALTH, BREAKER and load columns; --json prints the dataclasses."""
    code, out, err = await run_cli("tiers", "--target", router)
    header, row = out.splitlines()
    assert code == 0
    assert header.split()[:7] == ["NAME", "QUANT", "HEALTH", "BREAKER", "IN-FLIGHT", "RUN/WAIT", "KV"]
    assert row.split()[:3] == ["a", "q-a", "SERVING"]
    assert err == "predictor: none (tiers ranked by their profiled accuracy)\n"
    code, out, _ = await run_cli("tiers", "--target", router, "--json")
    assert [t["name"] for t in json.loads(out)] == ["a"]


async def test_tiers_prints_the_predictor_in_force(predicted_router):
    """`qarr tiers` (table or --json) prints the id of the router's accuracy predictor on stderr; stdout stays the
    header and one row per tier (or the JSON list) that scripts read."""
    address, predictor_id = predicted_router
    code, out, err = await run_cli("tiers", "--target", address)
    assert code == 0, err
    assert err == f"predictor: {predictor_id}\n"
    assert sorted(line.split()[0] for line in out.splitlines()[1:]) == ["a", "b"]
    code, out, err = await run_cli("tiers", "--target", address, "--json")
    assert code == 0 and sorted(t["name"] for t in json.loads(out)) == ["a", "b"]
    assert err == f"predictor: {predictor_id}\n"


async def test_health_prints_serving_and_exits_0(router):
    """`qarr health` prints SERVING and exits 0 for a live router."""
    assert await run_cli("health", "--target", router) == (0, "SERVING\n", "")


async def test_health_of_an_unreachable_router_exits_2():
    """`qarr health` against nothing prints Unavailable and exits 2."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    code, _, err = await run_cli("health", "--target", address, "--timeout", "2")
    assert code == 2 and err.startswith("error: Unavailable")


def test_every_option_of_every_command_has_help():
    """`--help` is complete: every command and every option has a help text."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == {"generate", "batch", "tiers", "health", "quantize", "profile", "train-router", "bench"}
    assert all(choice.help for choice in sub._choices_actions)
    for name, command in sub.choices.items():
        if name in TOOLS:  # their own parsers, checked below
            continue
        missing = [a.dest for a in command._actions if not a.help]
        assert not missing, f"qarr {name}: options without help: {missing}"


@pytest.mark.parametrize("tool, usage", [("quantize", "qarr-quantize"), ("profile", "qarr-profile"),
                                         ("train-router", "qarr train-router"), ("bench", "")])
def test_operator_tools_answer_help_through_qarr(capsys, tool, usage):
    """`qarr quantize|profile|train-router|bench --help` reaches the tool's own parser and exits 0."""
    with pytest.raises(SystemExit) as exited:
        main([tool, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "usage:" in out and usage in out


@pytest.mark.parametrize(
    "command, options",
    [
        ("generate", ["--tier", "--max-tokens", "--latency-budget-ms", "--json", "--target", "--timeout", "--token", "--tls"]),
        ("batch", ["--output", "--concurrency", "--retry-errors", "--max-tokens", "--tier", "resume", "exit status"]),
        ("tiers", ["--json", "--target"]),
        ("health", ["--service", "--target"]),
    ],
)
def test_help_lists_the_options_of_each_command(capsys, command, options):
    """`qarr COMMAND --help` exits 0 and names the command's options."""
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    text = capsys.readouterr().out
    assert exited.value.code == 0
    assert [o for o in options if o not in text] == []
